"""Benchmark: a training step inside a Ray Train worker vs the same step in a plain PyTorch loop, side by side.

    .venv/bin/python bench/bench_train_overhead.py            # tiny city, weighted KD, warm-up + 4 rounds of 6 steps
    .venv/bin/python bench/bench_train_overhead.py --quick    # warm-up + 2 rounds of 4 steps

Both sides run the project's own training code on the same real shards (the tiny synthetic city
at 160x120, built once with build_shards): `train_loop.train_epoch` over `training_loader` (P x K place
batches) -> `train_loop.batch_loss` (student: RGB branch, metric loss, KD from a teacher, weighted by
ranks against the `refresh_gallery` gallery), AdamW + the recipe's LR schedule. Same recipe, same
seeds, so the same initial weights and the same batches; the printed losses of both sides must match.
Every side builds its job with `train_loop.build_job`, which loads the teacher as a job does: a
checkpoint with random weights from a fixed seed (`common.scratch_teacher`; speed does not depend on them).

(a) plain: in this process, the model from `train_loop.build_model` (with `prepare=` the identity instead of
    ray.train.torch.prepare_model, since there is no Ray Train session here).
(b) ray: a Ray Train TorchTrainer, 1 worker, 1 CPU (the ScalingConfig `build_trainer` makes), whose
    worker runs `train_loop.build_model` (with the real prepare_model) and the same epochs.

(c) niced: the plain loop again, in its own thread of this process at the niceness the Ray worker
    runs at (Ray starts workers at niceness 15; Ray Train runs the function in a thread of the worker).
    On a machine shared with other jobs the kernel gives a niceness-15 process less CPU than a plain
    loop started from a terminal; (b) vs (c) separates that from Ray's own per-step work.
    --no-niced skips it.

torch uses one thread on every side. Rounds alternate (ray plain niced, niced plain ray, ...); the
sides take turns (through files in a sync folder for the worker), so they never compute at the same
time. Only steps are
timed: the step time is the interval between successive `batch_loss` calls (loss, backward, optimizer,
scheduler, and fetching the next batch); gallery refresh and loader start-up are outside. Round 0 of
each side is a warm-up, not counted. Target: Ray's median step time at most 5% above the plain loop's.

Also printed: the fixed start-up cost of a Ray Train job, seconds from fit() to the first step in the
worker (and from ray.init), next to the plain loop's set-up to first step in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import common  # noqa: E402  (puts the repo on sys.path)

import torch

from structvpr.cli import parse_size
from structvpr.config import from_dict
from structvpr.platform.jobs.job_kind import job_kind
from structvpr.platform.recipe import Recipe

TARGET_OVERHEAD = 0.05
TEACHER_SEED = 12345


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="2 rounds of 4 steps")
    p.add_argument("--rounds", type=int, help="timed rounds after the warm-up round (default 4, quick 2)")
    p.add_argument("--steps", type=int, help="steps (batches) per round (default 6, quick 4)")
    p.add_argument("--city", default="tiny", choices=["tiny", "small"], help="synthetic city of the shards")
    p.add_argument("--size", default="160x120", help="WxH of the shards")
    p.add_argument("--kd", default="weighted", choices=["weighted", "plain", "none"], help="student kd.mode")
    p.add_argument("--places", type=int, default=8, help="P: places per batch")
    p.add_argument("--views", type=int, default=4, help="K: views per place")
    p.add_argument("--dim", type=int, default=128, help="descriptor size (configs/tiny: 128)")
    p.add_argument("--no-niced", action="store_true", help="skip side (c), the plain loop at the worker's niceness")
    return p.parse_args(argv)


# ---------------------------------------------------------------- shared by both sides (pickled by value to the worker)


def make_job(config: dict, device):
    """The job of rank 0 of 1, as build_job makes it; its teacher is the scratch checkpoint in config["teacher_ref"]."""
    from structvpr.platform.jobs.train_loop import build_job

    return build_job(from_dict(Recipe, config["recipe"]), 0, 1, device, teacher_ref=config["teacher_ref"])


def build(job, prepare=None):
    """train_loop.build_model under the recipe's seed (the same initial weights on both sides), and the job's loader."""
    from structvpr.platform.jobs import train_loop
    from structvpr.platform.jobs.data import training_loader
    from structvpr.platform.losses import MetricLoss

    torch.manual_seed(job.recipe.train.seed)
    model, optimizer, scheduler = train_loop.build_model(job, prepare)
    loader = training_loader(job.recipe, job.rank, job.world_size)
    return model, optimizer, scheduler, MetricLoss(distributed=job.world_size > 1), loader


def thread_switches() -> tuple[int, int]:
    """(voluntary, involuntary) context switches of the calling thread so far (Linux; zeros elsewhere)."""
    try:
        with open("/proc/thread-self/status") as f:
            fields = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
        return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])
    except (OSError, KeyError, ValueError):
        return 0, 0


def run_epoch(job, parts, epoch: int) -> dict:
    """One epoch as train_loop_per_worker runs it (seed, gallery, train_epoch), with each batch_loss call timed."""
    from structvpr.platform.jobs import train_loop

    model, optimizer, scheduler, metric_loss, loader = parts
    torch.manual_seed(job.recipe.train.seed * 7919 + epoch * 101 + job.rank)
    start_wall, started = time.time(), time.perf_counter()
    gallery = train_loop.refresh_gallery(job, model) if job.kind.uses_gallery else None
    gallery_s = time.perf_counter() - started
    entries, cpu, proc, walls, losses, switches = [], [], [], [], [], []
    real = train_loop.batch_loss

    def timed_batch_loss(*args, **kwargs):
        entries.append(time.perf_counter())
        cpu.append(time.thread_time())  # CPU time of this thread: torch runs its one intra-op thread here
        proc.append(time.process_time())  # ... and of all threads of the process
        switches.append(thread_switches())
        walls.append(time.time())
        out = real(*args, **kwargs)
        losses.append(float(out[0].detach()))
        return out

    train_loop.batch_loss = timed_batch_loss  # train_epoch looks the name up at each call
    try:
        epoch_start = time.perf_counter()
        train_loop.train_epoch(job, model, optimizer, scheduler, metric_loss, gallery, loader)
        end, end_cpu, end_proc = time.perf_counter(), time.thread_time(), time.process_time()
        end_switches = thread_switches()
    finally:
        train_loop.batch_loss = real
    steps = [b - a for a, b in zip(entries, entries[1:] + [end])]
    cpu_steps = [b - a for a, b in zip(cpu, cpu[1:] + [end_cpu])]
    proc_steps = [b - a for a, b in zip(proc, proc[1:] + [end_proc])]
    vol_steps = [b[0] - a[0] for a, b in zip(switches, switches[1:] + [end_switches])]
    invol_steps = [b[1] - a[1] for a, b in zip(switches, switches[1:] + [end_switches])]
    return {"epoch": epoch, "steps": steps, "cpu_steps": cpu_steps, "proc_steps": proc_steps, "vol_steps": vol_steps,
            "invol_steps": invol_steps, "losses": losses, "start_wall": start_wall, "end_wall": time.time(),
            "first_step_wall": walls[0] if walls else None,
            "epoch_seconds": end - epoch_start, "gallery_seconds": gallery_s, "threads": torch.get_num_threads(),
            "pid": os.getpid(), "nice": os.getpriority(os.PRIO_PROCESS, 0)}


def wait_for(path: Path, timeout: float, alive=lambda: True) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise TimeoutError(f"no {path.name} after {timeout:.0f} s")
        if not alive():
            raise RuntimeError(f"the other side stopped before writing {path.name}")
        time.sleep(0.02)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # the reader never sees half a file


def ray_worker(config: dict) -> None:
    """The Ray Train worker: round 0 at once (start-up is measured to its first step), then on each go-r file."""
    import ray.train.torch

    t_enter = time.time()
    torch.set_num_threads(1)
    sync = Path(config["sync"])
    job = make_job(config, ray.train.torch.get_device())
    parts = build(job)
    t_built = time.time()
    for r in range(config["rounds"] + 1):
        if r:
            wait_for(sync / f"go-{r}", timeout=1800)
        result = run_epoch(job, parts, r)
        result.update(t_enter=t_enter, t_built=t_built,
                      omp=os.environ.get("OMP_NUM_THREADS"), device=str(job.device))
        write_json(sync / f"done-{r}.json", result)


# ---------------------------------------------------------------- driver


def make_recipe(shard_dir: Path, args, steps: int, rounds: int) -> Recipe:
    return from_dict(Recipe, {
        "kind": "student", "teacher": "built-from-scratch-in-the-benchmark",
        "data": {"shards": str(shard_dir), "places_per_batch": args.places, "views_per_place": args.views,
                 "batches_per_epoch": steps, "loader_workers": 0},
        "model": {"backbone": "resnet18", "aggregator": "gem", "dim": args.dim},
        "train": {"epochs": rounds + 1, "seed": 0, "lr": 1e-3},
        "kd": {"mode": args.kd},
        "scaling": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1},
        "run": {"storage_path": str(common.WORK / "overhead-runs")},
    })


def start_trainer(recipe: Recipe, config: dict, name: str):
    """A TorchTrainer with the ScalingConfig build_trainer makes from the recipe, running ray_worker."""
    import ray.train
    from ray.train.torch import TorchTrainer

    s = recipe.scaling
    return TorchTrainer(
        ray_worker, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                               resources_per_worker={"CPU": s.cpus_per_worker},
                                               placement_strategy=s.placement_strategy),
        run_config=ray.train.RunConfig(name=name, storage_path=recipe.run.storage_path,
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    )


def ray_background_cpu(exclude: set[int]) -> float:
    """CPU seconds used so far by this process's descendants (Ray's gcs, raylet, controller, ...) except `exclude`."""
    import psutil

    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        if proc.pid in exclude:
            continue
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


@dataclass
class Setup:
    """What every side shares: the recipe, the config the Ray worker gets, the sync folder, rounds and steps."""

    recipe: Recipe
    config: dict
    sync: Path
    rounds: int
    steps: int


def set_up(args) -> Setup:
    """Print the machine; the shards (built once), the scratch teacher, the recipe and an empty sync folder."""
    rounds = args.rounds or (2 if args.quick else 4)
    steps = args.steps or (4 if args.quick else 6)
    size = parse_size(args.size)
    common.start(threads=1)
    common.quiet_ray_logs()
    city = common.bench_city(quick=args.city == "tiny")
    shard_dir = common.shards(city, size)
    recipe = make_recipe(shard_dir, args, steps, rounds)
    teacher = common.scratch_teacher(recipe, TEACHER_SEED) if job_kind(recipe).uses_teacher else ""
    sync = common.WORK / f"overhead-sync-{os.getpid()}"
    shutil.rmtree(sync, ignore_errors=True)
    sync.mkdir(parents=True)
    config = {"recipe": asdict(recipe), "teacher_ref": teacher, "sync": str(sync), "rounds": rounds}
    print(f"shards: {shard_dir.name}; student resnet18+GeM dim {args.dim}, kd.mode={args.kd}, "
          f"batch {args.places}x{args.views} = {args.places * args.views} images at {size[0]}x{size[1]}; "
          f"warm-up + {rounds} rounds of {steps} steps per side; torch threads {torch.get_num_threads()}")
    return Setup(recipe, config, sync, rounds, steps)


class PlainSide:
    """(a) the plain loop in this process; its set-up (job, model) is timed as the worker's is."""

    def __init__(self, config: dict):
        self.t_start = time.time()
        self.job = make_job(config, torch.device("cpu"))
        self.parts = build(self.job, prepare=lambda model: model)
        self.t_built = time.time()

    def run(self, epoch: int) -> dict:
        return run_epoch(self.job, self.parts, epoch)


class RaySide:
    """(b) Ray: init, then fit() in a thread; the worker runs its warm-up round at once, each later one on a go-r file."""

    def __init__(self, recipe: Recipe, config: dict, sync: Path):
        from structvpr.runtime import ensure_ray

        self.sync = sync
        self.t_init0 = time.time()
        ensure_ray()
        self.t_init1 = time.time()
        self.trainer = start_trainer(recipe, config, f"overhead-{os.getpid()}")
        self.errors, self.times = [], {}
        self.thread = threading.Thread(target=self._fit, daemon=True)
        self.thread.start()

    def _fit(self) -> None:
        self.times["start"] = time.time()
        try:
            self.trainer.fit()
        except BaseException as exc:  # surfaced in the main thread
            self.errors.append(exc)
        self.times["end"] = time.time()

    def _alive(self) -> bool:
        return self.thread.is_alive() or not self.errors

    def run(self, r: int) -> dict:
        if r:
            (self.sync / f"go-{r}").touch()
        try:
            wait_for(self.sync / f"done-{r}.json", timeout=1800, alive=self._alive)
        except Exception:
            if self.errors:
                raise self.errors[0]
            raise
        return json.loads((self.sync / f"done-{r}.json").read_text())

    def close(self) -> None:
        self.thread.join(timeout=600)
        if self.errors:
            raise self.errors[0]


class NicedSide:
    """(c) the plain loop in its own thread at the Ray worker's niceness: what Ray's worker looks like to the kernel.

    Ray starts its workers at niceness 15 (RAY_worker_niceness), and Ray Train runs the training function
    in a thread of the worker, so on a machine shared with other (niceness 0) processes the worker gets
    less CPU than a plain loop in a terminal. This side separates that from Ray's own per-step work.
    On Linux niceness is per thread: raising it here (always allowed) leaves the main thread's alone.
    """

    def __init__(self, plain: PlainSide, niceness: int):
        import queue

        self.plain, self.niceness = plain, niceness
        self.todo, self.done = queue.Queue(), queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="niced-plain-loop")
        self.thread.start()

    def _loop(self) -> None:
        os.setpriority(os.PRIO_PROCESS, 0, self.niceness)  # 0: the calling thread (Linux)
        while (epoch := self.todo.get()) is not None:
            try:
                self.done.put(self.plain.run(epoch))
            except BaseException as exc:
                self.done.put(exc)

    def run(self, epoch: int) -> dict:
        self.todo.put(epoch)
        out = self.done.get()
        if isinstance(out, BaseException):
            raise out
        return out

    def close(self) -> None:
        self.todo.put(None)
        self.thread.join()


@dataclass
class Measured:
    """Every side's epochs (round 0, the warm-up, first), Ray's background cores per side, and the sides themselves."""

    sides: list[str]
    results: dict[str, list[dict]]
    background: dict[str, list[float]]
    ray: RaySide
    plain: PlainSide

    @property
    def worker(self) -> dict:
        return self.results["ray"][0]

    def all_of(self, side: str, key: str) -> list[float]:
        return [t for res in self.results[side][1:] for t in res[key]]

    def median(self, side: str, key: str = "steps") -> float:
        return statistics.median(self.all_of(side, key))

    def per_round(self, a: str, b: str, key: str = "steps") -> list[float]:
        return [statistics.median(x[key]) / statistics.median(y[key])
                for x, y in zip(self.results[a][1:], self.results[b][1:])]


def measure(setup: Setup, niced: bool) -> Measured:
    """Set up (a), (c) and (b) in that order, run the warm-up round (ray first: its start-up is timed), then the rounds."""
    plain = PlainSide(setup.config)
    niced_plain = PlainSide(setup.config) if niced else None
    ray = RaySide(setup.recipe, setup.config, setup.sync)
    print("warm-up round (ray first: its start-up is timed)...", flush=True)
    results = {"ray": [ray.run(0)], "plain": [plain.run(0)]}
    run_side = {"ray": ray.run, "plain": plain.run}
    niced_side = None
    if niced_plain is not None:
        niced_side = NicedSide(niced_plain, results["ray"][0]["nice"])
        run_side["niced"] = niced_side.run
        results["niced"] = [niced_side.run(0)]
    background = run_rounds(run_side, results, setup.rounds, results["ray"][0]["pid"])
    if niced_side is not None:
        niced_side.close()
    ray.close()
    shutil.rmtree(setup.sync, ignore_errors=True)
    return Measured(list(run_side), results, background, ray, plain)


def run_rounds(run_side: dict, results: dict, rounds: int, worker_pid: int) -> dict[str, list[float]]:
    """The timed rounds, the sides' order alternating; the cores Ray's other processes used while each side ran."""
    sides = list(run_side)  # ray, plain[, niced]
    background = {s: [] for s in sides}
    for r in range(1, rounds + 1):
        order = sides if r % 2 else sides[::-1]
        for side in order:
            cpu0, wall0 = ray_background_cpu({worker_pid}), time.perf_counter()
            results[side].append(run_side[side](r))
            background[side].append((ray_background_cpu({worker_pid}) - cpu0) / (time.perf_counter() - wall0))
        ms = {s: statistics.median(results[s][-1]["steps"]) * 1e3 for s in sides}
        print(f"  round {r}/{rounds} ({' '.join(order)}): " + "  ".join(f"{s} {ms[s]:,.0f} ms/step" for s in sides)
              + f"  ray/plain {ms['ray'] / ms['plain']:.3f}", flush=True)
    return background


# ---------------------------------------------------------------- report


def report_steps(m: Measured) -> None:
    """Same losses on every side, who ran where, and the step table with its per-round ratios."""
    worker, sides = m.worker, m.sides
    diffs = [abs(x - y) for s in sides[1:] for rr, pp in zip(m.results["ray"], m.results[s])
             for x, y in zip(rr["losses"], pp["losses"])]
    print(f"\nsame losses on every side, every step of every round: max |difference| = {max(diffs):.2e} "
          f"over {len(diffs)} step pairs ({'yes' if max(diffs) < 1e-4 else 'NO: the sides did not train alike'})")
    plain0 = m.results["plain"][0]
    print(f"ray worker: pid {worker['pid']}, device {worker['device']}, torch threads {worker['threads']}, "
          f"OMP_NUM_THREADS={worker['omp']}, niceness {worker['nice']}; plain: pid {os.getpid()}, "
          f"torch threads {plain0['threads']}, niceness {plain0['nice']}")
    names = {"plain": "(a) plain PyTorch loop, in-process",
             "ray": f"(b) Ray Train worker, 1 CPU (nice {worker['nice']})",
             "niced": f"(c) plain loop, own thread, nice {worker['nice']}"}
    common.print_table(
        ["side", "median step (ms)", "min..max (ms)", "CPU ms/step: thread", "process", "switches/step: vol.",
         "invol.", "Ray bg. cores", "epoch (s)", "steps"],
        [[names[s], f"{m.median(s) * 1e3:,.1f}", common.spread(t * 1e3 for t in m.all_of(s, "steps")),
          f"{m.median(s, 'cpu_steps') * 1e3:,.1f}", f"{m.median(s, 'proc_steps') * 1e3:,.1f}",
          f"{m.median(s, 'vol_steps'):,.0f}", f"{m.median(s, 'invol_steps'):,.0f}",
          f"{statistics.median(m.background[s]):.2f}",
          f"{statistics.median(res['epoch_seconds'] for res in m.results[s][1:]):.2f}", len(m.all_of(s, "steps"))]
         for s in ("plain", "ray", "niced") if s in sides],
        title="training step (train_epoch -> batch_loss, backward, AdamW, schedule, next batch)")
    print(f"per-round ratio (b)/(a), median step times: {' '.join(f'{x:.3f}' for x in m.per_round('ray', 'plain'))}")
    if "niced" in sides:
        print(f"per-round ratio (b)/(c), median step times: {' '.join(f'{x:.3f}' for x in m.per_round('ray', 'niced'))}")
    cpu_rounds = m.per_round("ray", "plain", "cpu_steps")
    print(f"per-round ratio (b)/(a), CPU time of the training thread: {' '.join(f'{x:.3f}' for x in cpu_rounds)}")
    print("CPU ms/step: CPU time of the training thread, and of all threads of its process (the same work gives the "
          "same thread time;\n  the rest of a step's wall time is waiting for a core or the GIL). Switches: context "
          "switches of the training thread,\n  voluntary (it blocked: GIL, I/O) and involuntary (preempted). "
          "Ray bg. cores: CPU used by Ray's other processes\n  (gcs, raylet, controller, dashboard, ...) while that "
          "side ran its epoch, in cores.")


def report_startup(m: Measured) -> None:
    """The fixed start-up of the Ray Train job, next to the plain loop's set-up."""
    worker, ray, plain, plain0 = m.worker, m.ray, m.plain, m.results["plain"][0]
    first, fit_start = worker["first_step_wall"], ray.times["start"]
    common.print_table(
        ["start-up", "seconds"],
        [["ray.init (local, new instance)", f"{ray.t_init1 - ray.t_init0:.1f}"],
         ["fit() -> worker function entered", f"{worker['t_enter'] - fit_start:.1f}"],
         ["worker: job + model built", f"{worker['t_built'] - worker['t_enter']:.1f}"],
         ["worker: model built -> first step (gallery, loader)", f"{first - worker['t_built']:.1f}"],
         ["fit() -> first step in the worker", f"{first - fit_start:.1f}"],
         ["ray.init + fit() -> first step", f"{first - ray.t_init0:.1f}"],
         ["plain: set-up -> first step (job, model, gallery, loader)",
          f"{(plain.t_built - plain.t_start) + (plain0['first_step_wall'] - plain0['start_wall']):.1f}"],
         ["ray: last step done -> fit() returned (teardown)", f"{ray.times['end'] - m.results['ray'][-1]['end_wall']:.1f}"]],
        title="fixed start-up of a Ray Train job (wall clock; the plain loop's set-up for comparison)")


def report_verdict(m: Measured) -> dict:
    """The overhead against the target (wall time, at the same niceness, CPU time) and the start-up; the numbers."""
    overhead = statistics.median(m.per_round("ray", "plain")) - 1.0
    print()
    print(f"Ray Train step overhead (b) vs (a): {overhead * 100:+.1f}% (median of per-round ratios; target <= "
          f"{TARGET_OVERHEAD * 100:g}%) -> {'MET' if overhead <= TARGET_OVERHEAD else 'NOT MET'}")
    if "niced" in m.sides:
        same_nice = statistics.median(m.per_round("ray", "niced")) - 1.0
        print(f"  at the worker's niceness, (b) vs (c): {same_nice * 100:+.1f}% -> "
              f"{'MET' if same_nice <= TARGET_OVERHEAD else 'NOT MET'} (what is left of Ray's own per-step cost)")
    cpu_overhead = statistics.median(m.per_round("ray", "plain", "cpu_steps")) - 1.0
    print(f"  CPU time per step (b) vs (a): {cpu_overhead * 100:+.1f}% -> "
          f"{'MET' if cpu_overhead <= TARGET_OVERHEAD else 'NOT MET'} (the work Ray adds to a step; insensitive to "
          "other jobs preempting the sides)")
    startup = m.worker["first_step_wall"] - m.ray.times["start"]
    print(f"fixed start-up, fit() -> first step: {startup:.1f} s "
          f"(plus {m.ray.t_init1 - m.ray.t_init0:.1f} s of ray.init when no Ray is running)")
    return {"overhead": overhead, "cpu_overhead": cpu_overhead, "median_step": {s: m.median(s) for s in m.sides},
            "startup": startup}


def main(argv=None):
    """Set up, measure the sides round by round, report."""
    args = parse_args(argv)
    setup = set_up(args)
    measured = measure(setup, niced=not args.no_niced)
    report_steps(measured)
    report_startup(measured)
    return report_verdict(measured)


if __name__ == "__main__":
    main()
