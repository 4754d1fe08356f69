"""`structvpr registry`: gated promotion of the champion alias, rollback, history tags, the lock, and a real race."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from structvpr import cli
from structvpr.deploy.registry.lock import SINCE_TAG, TOKEN_TAG, PromotionLock
from structvpr.deploy.registry.promotion import history
from structvpr.deploy.registry.records import Evaluation, alias_map, read_version

MANIFEST = "a" * 64


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating its tables takes seconds); each test registers its own model."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("registry", artifact_location=(folder / "artifacts").as_uri())
    return uri, client, client.create_run(experiment).info.run_id


@pytest.fixture
def model(store):
    """A fresh registered model name in the shared store."""
    uri, client, _ = store
    name = f"m-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    return name


def add_version(client, name: str, run_id: str, r1: float | None, manifest: str = MANIFEST) -> str:
    """A version with a recorded test evaluation (R@5, R@10 derived from R@1), or none when r1 is None."""
    version = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id).version
    if r1 is not None:
        for key, value in Evaluation(manifest, {1: r1, 5: r1 + 10, 10: r1 + 20}, "/shards").tags().items():
            client.set_model_version_tag(name, version, key, value)
    return str(version)


def registry(uri: str, *args: str) -> int:
    return cli.main(["registry", args[0], "--tracking-uri", uri, *args[1:]])


def versions(store, name: str, *r1s) -> list[str]:
    uri, client, run_id = store
    return [add_version(client, name, run_id, r1) for r1 in r1s]


def test_the_first_champion_must_reach_the_floor(store, model, capsys):
    uri, client, _ = store
    low, = versions(store, model, 0.8)
    assert registry(uri, "promote", model, low) == 2
    err = capsys.readouterr().err
    assert err.startswith("structvpr: error:") and "floor rule" in err and "R@1 0.8 does not reach the floor 1" in err
    assert alias_map(client, model) == {}
    assert registry(uri, "promote", model, low, "--floor", "0.5") == 0
    assert alias_map(client, model) == {"champion": low}
    assert "no champion yet" in capsys.readouterr().out


def test_margin_rule_refuses_with_the_numbers_then_promotes_and_keeps_previous(store, model, capsys):
    uri, client, _ = store
    first, close, better = versions(store, model, 33.9, 34.2, 40.0)
    assert registry(uri, "promote", model, first) == 0
    assert registry(uri, "promote", model, close) == 2
    err = capsys.readouterr().err
    assert f"candidate R@1 34.2 does not beat champion 33.9 (version {first}) by the margin 0.5" in err, err
    assert registry(uri, "promote", model, close, "--margin", "0.2") == 0  # the margin is the caller's
    assert registry(uri, "promote", model, better) == 0
    assert alias_map(client, model) == {"champion": better, "previous": close}
    moves = history(read_version(client, model, better).tags)
    assert len(moves) == 1 and moves[0]["champion"] == [close, better] and moves[0]["previous"] == [first, close]
    assert "beats champion 34.2" in moves[0]["reason"] and moves[0]["metrics"]["candidate"]["recall_at_1"] == 40.0
    assert len(history(read_version(client, model, close).tags)) == 2  # promoted, then displaced
    assert len(history(read_version(client, model, first).tags)) == 3  # champion, previous, then neither


def test_another_benchmark_and_no_evaluation_are_refused(store, model, capsys):
    uri, client, run_id = store
    champion, = versions(store, model, 30.0)
    other = add_version(client, model, run_id, 90.0, manifest="b" * 64)
    unevaluated = add_version(client, model, run_id, None)
    assert registry(uri, "promote", model, champion) == 0
    assert registry(uri, "promote", model, other) == 2
    err = capsys.readouterr().err
    assert "same-benchmark rule" in err and "b" * 12 in err and "a" * 12 in err and "b" * 13 not in err, err
    assert registry(uri, "promote", model, unevaluated) == 2
    assert "no recorded test evaluation" in capsys.readouterr().err
    assert registry(uri, "promote", model, "--evaluate", unevaluated) == 2
    assert "--evaluate and --shards DIR go together" in capsys.readouterr().err
    assert alias_map(client, model) == {"champion": champion}


def test_rollback_swaps_champion_and_previous_and_is_recorded(store, model, capsys):
    uri, client, _ = store
    old, new = versions(store, model, 20.0, 25.0)
    assert registry(uri, "promote", model, old) == 0
    assert registry(uri, "rollback", model) == 2
    assert "needs a champion and a different previous version (champion: " + old + ", previous: none)" in \
        capsys.readouterr().err
    assert registry(uri, "promote", model, new) == 0
    assert registry(uri, "rollback", model) == 0
    assert alias_map(client, model) == {"champion": old, "previous": new}
    for version in (old, new):
        last = history(read_version(client, model, version).tags)[-1]
        assert last["action"] == "rollback" and last["champion"] == [new, old] and last["previous"] == [old, new]
    assert registry(uri, "rollback", model) == 0  # a rollback of the rollback
    assert alias_map(client, model) == {"champion": new, "previous": old}


def test_list_and_show_print_aliases_evaluation_and_history(store, model, capsys):
    uri, client, run_id = store
    old, new = versions(store, model, 20.0, 25.5)
    plain = add_version(client, model, run_id, None)
    assert registry(uri, "promote", model, old) == 0 and registry(uri, "promote", model, new) == 0
    capsys.readouterr()
    assert registry(uri, "list", "--name", model) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == model and "R@1" in out[1] and "source run" in out[1]
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert rows[new][1:5] == ["champion", "25.5", "35.5", "45.5"] and rows[new][5:] == ["a" * 12, run_id]
    assert rows[old][1] == "previous" and rows[plain][1:3] == ["-", "-"]
    assert registry(uri, "show", f"{model}@champion") == 0
    shown = capsys.readouterr().out
    assert f"{model} version {new}" in shown and "R@1 25.5, R@5 35.5, R@10 45.5" in shown and MANIFEST in shown
    assert f"champion {old} -> {new}, previous none -> {old}" in shown and "beats champion 20" in shown
    assert registry(uri, "show", f"{model}/{plain}") == 0
    assert "not evaluated" in capsys.readouterr().out
    assert registry(uri, "show", f"{model}@nothing") == 2 and registry(uri, "show", "no-such-model/1") == 2
    assert registry(uri, "list") == 0 and model in capsys.readouterr().out


def test_a_stale_lock_is_taken_over_and_a_live_one_times_out_with_advice(store, model, capsys):
    uri, client, _ = store
    first, = versions(store, model, 10.0)
    lock = PromotionLock(client, model)
    client.create_registered_model(lock.name, tags={TOKEN_TAG: "dead", SINCE_TAG: repr(time.time() - 3600)})
    assert registry(uri, "promote", model, first) == 0
    assert "taking over the stale promotion lock" in capsys.readouterr().err
    assert lock.holder() is None, "released after the move"
    with PromotionLock(client, model):
        assert registry(uri, "rollback", model, "--lock-timeout", "0.5") == 2
    err = capsys.readouterr().err
    assert f"the promotion lock {lock.name} is still held by" in err and "--lock-ttl 0" in err, err
    assert lock.holder() is None
    assert registry(uri, "list") == 0 and ".promotion-lock" not in capsys.readouterr().out


def test_evaluate_records_test_recall_of_candidate_and_champion(store, tiny_shards, capsys):
    """Real branches, registered as training does: evaluated on the test split, recorded on the version, judged."""
    import mlflow
    import torch

    from structvpr.datasets.shards.manifest import Manifest
    from structvpr.platform.models import create_branch
    from structvpr.platform.store.logged_model import REGISTERED_NAMES, log_model

    uri, client, run_id = store
    mlflow.set_tracking_uri(uri)
    registered = []
    for seed in (0, 1):
        with mlflow.start_run(experiment_id=client.get_run(run_id).info.experiment_id):
            torch.manual_seed(seed)
            branch = create_branch("test_resnet", 3, "gem", 16, image_hw=(48, 64))
            version = log_model(branch, (64, 48), {"image_size": [64, 48], "kind": "student"}, "student")
            registered.append(str(version))
    model, (first, second) = REGISTERED_NAMES["student"], registered
    hash_ = Manifest.load(tiny_shards).hash
    assert registry(uri, "promote", model, first, "--evaluate", "--shards", str(tiny_shards), "--floor", "0") == 0
    record = read_version(client, model, first).evaluation
    assert record.manifest == hash_ and 0 <= record.recall[1] <= record.recall[10] <= 100
    client.set_model_version_tag(model, first, "structvpr.test.manifest", "c" * 64)  # as if evaluated elsewhere
    capsys.readouterr()
    assert registry(uri, "promote", model, second, "--evaluate", "--shards", str(tiny_shards), "--margin", "-100") == 0
    assert capsys.readouterr().out.count("recorded on the version") == 2, "candidate and champion evaluated"
    assert read_version(client, model, first).evaluation.manifest == hash_
    assert alias_map(client, model) == {"champion": second, "previous": first}


# The race: two `structvpr registry promote` processes against one `mlflow server`.

def start_promote(uri: str, name: str, version: str, folder: Path) -> tuple[subprocess.Popen, Path]:
    err = folder / f"promote-{version}.err"
    cmd = [sys.executable, "-m", "structvpr", "registry", "promote", "--tracking-uri", uri, name, version]
    with open(folder / f"promote-{version}.out", "w") as out, open(err, "w") as err_file:
        return subprocess.Popen(cmd, stdout=out, stderr=err_file), err


def wait_for_text(path: Path, text: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while text not in path.read_text():
        assert time.time() < deadline, f"{path.name}: no {text!r} after {timeout:.0f} s:\n{path.read_text()}"
        time.sleep(0.2)


def moves_of(client, name: str) -> dict[str, dict]:
    """Every recorded move of the model, by id (each stands on every version it involved)."""
    found = {}
    for mv in client.search_model_versions(f"name = '{name}'"):
        found.update({m["id"]: m for m in history(mv.tags)})
    return found


def race_once(server_uri: str, client, name: str, run_id: str, r1s: tuple[float, float], folder: Path) -> None:
    """Both candidates beat the champion; they are released at the same instant from a lock the test holds."""
    champion_before = alias_map(client, name)["champion"]
    known = set(moves_of(client, name))
    candidates = [add_version(client, name, run_id, r1) for r1 in r1s]
    procs = []
    try:
        with PromotionLock(client, name):  # both processes queue behind it, then race for it
            procs = [start_promote(server_uri, name, v, folder) for v in candidates]
            for _, err in procs:
                wait_for_text(err, "waiting for the promotion lock")
    finally:
        for proc, _ in procs:  # ours, by PID, if the test failed before they finished
            if proc.poll() is None and sys.exc_info()[0] is not None:
                proc.kill()
    codes = [proc.wait(timeout=120) for proc, _ in procs]
    errors = [err.read_text() for _, err in procs]
    assert sorted(codes) in ([0, 0], [0, 2]), (codes, errors)
    assert all("margin rule" in e for c, e in zip(codes, errors) if c == 2), errors
    new_moves = {i: m for i, m in moves_of(client, name).items() if i not in known}
    assert len(new_moves) == codes.count(0), "each applied promotion is recorded once, refusals are not moves"
    chain = [champion_before]  # the moves must chain: each displaces the champion the one before installed
    while len(chain) <= len(new_moves):
        step = [m for m in new_moves.values() if m["champion"][0] == chain[-1]]
        assert len(step) == 1, (chain, new_moves)
        chain.append(step[0]["champion"][1])
    assert alias_map(client, name) == {"champion": chain[-1], "previous": chain[-2]}
    assert chain[-1] == candidates[r1s.index(max(r1s))], "the better candidate ends as champion either way"


def test_concurrent_promotions_serialise_on_a_real_mlflow_server(tmp_path):
    from mlflow.tracking import MlflowClient

    from structvpr.deploy.mlflow_server import MlflowServer

    with MlflowServer(tmp_path / "server") as server:
        client = MlflowClient(server.uri)
        run_id = client.create_run(client.create_experiment("race")).info.run_id
        name = "structvpr-student"
        client.create_registered_model(name)
        assert registry(server.uri, "promote", name, add_version(client, name, run_id, 30.0)) == 0
        for r1s in [(40.0, 50.0), (70.0, 60.0)]:
            race_once(server.uri, client, name, run_id, r1s, tmp_path)
        assert PromotionLock(client, name).holder() is None
