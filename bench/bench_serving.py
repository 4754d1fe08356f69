"""Benchmark: serving the RGB student vs the teacher path (segmentation + teacher) through the same HTTP server.

    .venv/bin/python bench/bench_serving.py            # 160x120, batch 1 and 8, 40 requests a round, 3 rounds
    .venv/bin/python bench/bench_serving.py --quick    # 12 requests a round, 2 rounds (about a minute)

Both models are logged the way training jobs log them (`log_model`: the pyfunc of
structvpr/deploy/serving/served_model.py) and registered in a scratch MLflow store, then served by two
`mlflow models serve --env-manager local` processes on 127.0.0.1 (one uvicorn worker each, started
side by side, stopped by PID). (a) student: resnet18 + GeM (3 ch, dim 256). (b) teacher path: the
teacher (resnet18 + GeM reading the 8 one-hot categories) logged with a segmentation checkpoint
(default FPN/resnet18, untrained: speed does not depend on training) that segments each image first.
Requests are real JSON bodies of base64 JPEGs (images of the tiny city rendered at 320x240, which the
server decodes and resizes to 160x120 as the shards were built), sent one after another by one client
(no concurrency). Rounds alternate the order (a b, b a, ...) after one warm-up request of each.
Reported: latency p50 / p95 per request, images/s, and the ratio of the student's images/s to the
teacher path's (median of per-round ratios). No index: both answer descriptors only.
"""

from __future__ import annotations

import base64
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import common  # noqa: E402  (puts the repo on sys.path)

import torch

from structvpr.datasets.class_maps import NUM_CATEGORIES
from structvpr.datasets.images import encode_jpeg, load_rgb
from structvpr.deploy.processes import free_port, spawn, stop_group, venv_env, wait_until
from structvpr.platform.models import create_branch
from structvpr.platform.store.tracking import experiment_id

SIZE = (160, 120)


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="12 requests a round, 2 rounds")
    p.add_argument("--requests", type=int, help="requests per candidate per round (default 40, quick 12)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    p.add_argument("--batches", default="1,8", help="comma list of images per request")
    return p.parse_args(argv)


def register_models(folder: Path) -> tuple[str, str, str]:
    """The student and the teacher-with-segmenter, logged and registered as training jobs do; their URIs."""
    import mlflow

    from structvpr.platform.store.logged_model import log_model

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=experiment_id(uri, "bench-serving"))  # artifacts beside the sqlite file
    torch.manual_seed(0)
    student = create_branch("resnet18", 3, "gem", 256, image_hw=SIZE[::-1]).for_inference()
    teacher = create_branch("resnet18", NUM_CATEGORIES, "gem", 256, image_hw=SIZE[::-1]).for_inference()
    with mlflow.start_run(run_name="student"):
        log_model(student, SIZE, {"kind": "student"}, "student")
    with mlflow.start_run(run_name="teacher-path"):
        log_model(teacher, SIZE, {"kind": "teacher"}, "teacher", segmenter=str(common.seg_checkpoint(SIZE)))
    return uri, "models:/structvpr-student/latest", "models:/structvpr-teacher/latest"


def serve(uri: str, model: str, log: Path):
    port = free_port()
    env = venv_env({"MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"})
    proc = spawn([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
                  "-h", "127.0.0.1", "-p", str(port), "-w", "1"], log, env)
    return proc, f"http://127.0.0.1:{port}"


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def body(jpegs: list[bytes]) -> bytes:
    rows = [[base64.b64encode(j).decode()] for j in jpegs]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def client(url: str, payload: bytes, images: int, requests: int, latencies: list):
    """A candidate: `requests` requests one after another; each latency kept, images counted."""
    def run() -> float:
        for _ in range(requests):
            start = time.perf_counter()
            request = urllib.request.Request(f"{url}/invocations", data=payload,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
            latencies.append(time.perf_counter() - start)
            assert len(answer["predictions"]) == images and len(answer["predictions"][0]["descriptor"]) == 256
        return requests * images

    return run


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main(argv=None):
    args = parse_args(argv)
    requests, rounds = args.requests or (12 if args.quick else 40), args.rounds or (2 if args.quick else 3)
    common.start(torch.get_num_threads())  # the client: the servers choose their own threads
    folder = common.WORK / "serving"  # the servers' logs
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=common.WORK) as store:  # a fresh registry each run
        return run(args, folder, Path(store), requests, rounds)


def run(args, folder: Path, store: Path, requests: int, rounds: int):
    uri, student, teacher = register_models(store)
    paths = sorted((common.city("tiny", (320, 240)) / "images").rglob("*.jpg"))[:8]
    jpegs = [encode_jpeg(load_rgb(p)[0]) for p in paths]
    servers = {name: serve(uri, ref, folder / f"{name}.log") for name, ref in (("student", student), ("teacher_path", teacher))}
    try:
        for name, (proc, url) in servers.items():
            wait_until(lambda: ready(url), 300, f"mlflow models serve ({name})", folder / f"{name}.log", proc)
        print(f"servers: one uvicorn worker each, {requests} requests a round, {rounds} rounds + 1 warm-up request")
        rows, ratios = measure(servers, jpegs, [int(b) for b in args.batches.split(",")], requests, rounds)
    finally:
        for proc, _ in servers.values():
            stop_group(proc.pid)
    common.print_table(["batch", "candidate", "p50 ms", "p95 ms", "img/s (median)", "min..max", "ratio student/teacher"],
                       rows, title=f"serving over HTTP at {SIZE[0]}x{SIZE[1]}, requests one after another")
    return {"ratios": ratios, "rows": rows}


def measure(servers: dict, jpegs: list[bytes], batches: list[int], requests: int, rounds: int):
    rows, ratios = [], {}
    for batch in batches:
        payload = body(jpegs[:batch])
        latencies = {name: [] for name in servers}
        print(f"\nbatch {batch}", flush=True)
        for name, (_, url) in servers.items():  # warm-up: first request loads lazily initialised kernels
            client(url, payload, batch, 1, [])()
        res = common.interleaved({name: common.timed(client(url, payload, batch, requests, latencies[name]))
                                  for name, (_, url) in servers.items()}, rounds, warmup=False)
        ratios[batch] = res.ratio("student", "teacher_path")
        for name in servers:
            ms = [x * 1000 for x in latencies[name]]
            rows.append([batch, name, f"{percentile(ms, 50):.1f}", f"{percentile(ms, 95):.1f}", f"{res.med(name):.1f}",
                         common.spread(res.rates[name]), f"{ratios[batch]:.2f}" if name == "student" else ""])
    return rows, ratios


if __name__ == "__main__":
    main()
