"""`structvpr-demo/report.md` and its PNG plots, written from what the stages kept, and logged to MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from structvpr.demo import plots
from structvpr.demo.model_stages import STUDENT_TITLES

LABELS = {"teacher_gt_seg": "teacher (ground-truth seg)", "teacher_predicted_seg": "teacher (predicted seg)",
          **STUDENT_TITLES, "sweep_best": "sweep's best trial"}
REPORT_RUN = "demo-report"


def write_report(work: Path, preset: str, seed: int, found: dict, seconds: dict[str, float],
                 wall_seconds: float) -> Path:
    evaluation = found["evaluation"]
    parts = [f"# StructVPR demo report\n\nPreset `{preset}`, seed {seed}; every number below was measured by this "
             f"run of `structvpr demo --preset {preset}` on this machine ({wall_seconds / 60:.1f} min of "
             "stages, those run at once counted once). Recall is in % of test queries with a database image within 25 m.\n",
             recall_section(work, evaluation), checks_section(evaluation), groups_section(work, found["models"]),
             sweep_section(found["models"]["sweep"], evaluation), promotion_section(found["deploy"]),
             serving_section(found["deploy"]), wins_section(work, found["data"]["shards"]),
             time_section(seconds)]
    path = work / "report.md"
    path.write_text("\n".join(p for p in parts if p))
    return path


def fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def recall_section(work: Path, evaluation: dict) -> str:
    conditions = sorted({c for r in evaluation.values() for c in r["per_condition"]})
    lines = ["## Recall on the test split\n", "| model | R@1 | R@5 | R@10 | " + " | ".join(conditions) + " |",
             "|---" * (4 + len(conditions)) + "|"]
    for name, r in evaluation.items():
        cells = [fmt(r["recall"][n]) for n in ("1", "5", "10")]
        cells += [fmt(r["per_condition"].get(c, {}).get("1")) for c in conditions]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    plots.plot_recall_by_condition(evaluation, LABELS, work / "recall_by_condition.png")
    return "\n".join(lines) + ("\n\nPer-condition columns are R@1. The teacher reads segmentation maps; every student "
                               "reads RGB only.\n\n![recall by condition](recall_by_condition.png)\n")


def r1(evaluation: dict, name: str) -> float:
    return evaluation[name]["recall"]["1"] if name in evaluation else math.nan


def checks_section(evaluation: dict) -> str:
    """The method's claims, as this run measured them (docs/METHOD.md has them at the CPU scale, 3 seeds)."""
    teacher, rgb = r1(evaluation, "teacher_predicted_seg"), r1(evaluation, "rgb_only")
    weighted, plain = r1(evaluation, "weighted_kd"), r1(evaluation, "plain_kd")
    rows = [("teacher (predicted seg) minus RGB only", teacher - rgb, "> 0"),
            ("weighted KD minus RGB only", weighted - rgb, ">= 10 points"),
            ("weighted KD as a share of the teacher (%)", 100 * weighted / teacher if teacher else math.nan, ">= 90"),
            ("weighted KD minus plain KD", weighted - plain, ">= 1 point")]
    lines = ["## The method's claims, in this run\n", "| R@1 comparison | this run | target at the CPU scale |",
             "|---|---|---|", *[f"| {what} | {fmt(value)} | {target} |" for what, value, target in rows]]
    return "\n".join(lines) + ("\n\nOne seed at this preset's scale; docs/METHOD.md reports these over seeds at "
                               "`--preset full` (configs/cpu), where the differences mean more.\n")


def groups_section(work: Path, models: dict) -> str:
    from structvpr.platform.store.checkpoint import load_state

    history = load_state(models["students"]["weighted_kd"]["checkpoint"]).get("history", [])
    epochs = [h for h in history if any(k.startswith("group_") for k in h)]
    if not epochs:
        return "## Weighting groups\n\nThe weighted student recorded no group counts.\n"
    shares = plots.group_shares(epochs[-1])
    names = list(next(iter(shares.values()), {}))
    lines = ["## Weighting groups of the weighted-KD student, per condition\n",
             f"Share of the training views of each condition in each group at epoch {epochs[-1]['epoch']}, the epoch "
             "of the student's best checkpoint (the teacher's rank r_T comes from the fold teacher that did not train "
             "on the view; the test conditions that training never sees have no row).\n",
             "| condition | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    lines += [f"| {c} | " + " | ".join(f"{100 * s[g]:.0f}%" for g in names) + " |" for c, s in shares.items()]
    if shares:
        plots.plot_group_shares_by_condition(shares, epochs[-1]["epoch"], work / "weighting_groups.png")
        lines.append("\n![weighting groups](weighting_groups.png)")
    return "\n".join(lines) + "\n"


def sweep_section(sweep: dict, evaluation: dict) -> str:
    trials = sweep.get("trials", [])
    if not trials:
        return "## Sweep\n\nNo trial finished.\n"
    keys = [k for k in trials[0] if k.startswith(("kd.", "train."))]
    lines = [f"## Sweep of the weighting ({len(trials)} trials, best first; val R@1)\n",
             "| trial | status | epochs | val R@1 | " + " | ".join(keys) + " |", "|---" * (4 + len(keys)) + "|"]
    for t in trials:
        values = [f"{t[k]:.3g}" if isinstance(t[k], float) else str(t[k]) for k in keys]
        lines.append(f"| {t['trial_id']} | {t['status']} | {t['epochs']} | {fmt(t['best'])} | " + " | ".join(values) + " |")
    lines.append(f"\nTest R@1: the sweep's best {fmt(r1(evaluation, 'sweep_best'))} against the default weighting "
                 f"{fmt(r1(evaluation, 'weighted_kd'))} and plain KD {fmt(r1(evaluation, 'plain_kd'))} (trials "
                 f"chosen on val, reported on test). MLflow parent run `{sweep.get('parent_run_id')}`.\n")
    return "\n".join(lines)


def promotion_section(deploy: dict) -> str:
    promotion = deploy["promotion"]
    lines = ["## Promotion\n", "| candidate | version | val R@1 |", "|---|---|---|"]
    lines += [f"| {LABELS.get(c['name'], c['name'])} | {c['version']} | {fmt(c['val_r1'])} |"
              for c in promotion.get("candidates", [])]
    outcome = (f"Version {promotion['best']['version']} passed the gate (test R@1 against the floor or the "
               f"champion) and is `structvpr-student@champion`." if promotion.get("promoted")
               else f"Not promoted: {promotion.get('reason')}")
    return "\n".join(lines) + f"\n\n{outcome} Champion now: version {promotion.get('champion')}.\n"


def serving_section(deploy: dict) -> str:
    served, latency = deploy["served"], deploy["latency"]
    lines = ["## Serving\n"]
    if served.get("served"):
        lines += [f"`{served['model']}` (version {served['version']}) answered {len(served['queries'])} test queries "
                  f"sent as JPEG bytes through its MLflow pyfunc; {served['top1_right']} had a place within 25 m "
                  "first.\n", "| query (its condition) | top-1 place | its condition | score | metres off |",
                  "|---|---|---|---|---|"]
        lines += [f"| {q.get('condition', '')} query | {q['top1_key']} | {q['top1_condition']} | {q['top1_score']:.3f} "
                  f"| {q['top1_metres']} |" for q in served["queries"]]
    else:
        lines.append(served.get("reason", "not served"))
    lines.append(f"\nLatency per image (batch 1, median of 20, this machine): student {latency['student']:.1f} ms, "
                 f"teacher path (segmentation + teacher) {latency['teacher_path']:.1f} ms: {latency['ratio']:.2f}x.\n")
    return "\n".join(lines)


def wins_section(work: Path, shards: str) -> str:
    weighted, rgb_only = (dict(np.load(work / "eval" / f"{n}.npz")) for n in ("weighted_kd", "rgb_only"))
    right_first = weighted["correct"][:, 0], rgb_only["correct"][:, 0]
    wins = np.flatnonzero(right_first[0] & ~right_first[1])  # right for weighted KD, wrong for RGB only
    lost = int((~right_first[0] & right_first[1]).sum())
    text = (f"## Where weighted KD helps\n\n{len(wins)} test queries are right at R@1 for the weighted-KD student and "
            f"wrong for the RGB-only one ({lost} the other way round).\n")
    if len(wins):
        plots.plot_wins(wins[:6].tolist(), shards, weighted, rgb_only, work / "weighted_wins.png")
        text += "\n![queries weighted KD gets right](weighted_wins.png)\n"
    return text


def time_section(seconds: dict[str, float]) -> str:
    lines = ["## Time per stage\n", "The three students and the sweep run at once: their times overlap.\n",
             "| stage | seconds |", "|---|---|"]
    return "\n".join(lines + [f"| {name} | {s:.0f} |" for name, s in seconds.items()]) + "\n"


def log_report(uri: str, work: Path) -> str:
    """report.md and its plots as artifacts of one MLflow run (the same run on every rerun)."""
    from structvpr.platform.store.tracking import client, finish_run, start_or_resume_run

    run_id = start_or_resume_run(uri, "structvpr-demo", REPORT_RUN, {}, tags={"structvpr.kind": "demo-report"})
    c = client(uri)
    for path in [work / "report.md", *sorted(work.glob("*.png"))]:
        c.log_artifact(run_id, str(path), "report")
    finish_run(uri, run_id)
    return run_id
