"""Serving: the registered student takes JPEG bytes, a place index turns descriptors into top-k places, through
`structvpr index build`, `structvpr localize` and a real `mlflow models serve` answering real HTTP requests.

The model is a tiny branch trained from nothing (random weights): what is under test is that a database image
comes back as its own place, with the descriptor evaluation gives it, and that bad requests get readable 4xx.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from structvpr.datasets.shards.manifest import Manifest, shard_paths
from structvpr.datasets.shards.tar_reader import read_tar_samples
from structvpr.deploy.processes import free_port, spawn, stop_group, venv_env, wait_until
from structvpr.platform.store.tracking import experiment_id

MODEL = "models:/structvpr-student/1"


def database_jpegs(shards, split: str = "test") -> dict[str, bytes]:
    """The database images of a split as they sit in the shards: key -> JPEG bytes."""
    return {s["__key__"]: s["jpg"] for s in read_tar_samples(shard_paths(shards, split, "database"))}


def structvpr(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = venv_env({"MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"})
    done = subprocess.run([sys.executable, "-m", "structvpr", "--quiet", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def structvpr_here(uri: str, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (no interpreter start-up, about 6 s each): for checks that need no process of
    their own. Exit status, stdout, stderr."""
    from structvpr import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code = cli.main(["--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def register_tiny_student(uri: str, shards, seed: int) -> str:
    """A random-weight student at the shards' size, logged and registered the way training jobs do it."""
    import mlflow

    from structvpr.platform.models import create_branch
    from structvpr.platform.store.logged_model import log_model

    size = Manifest.load(shards).image_size
    torch.manual_seed(seed)
    model = create_branch("test_resnet", 3, "gem", 32, image_hw=size[::-1]).for_inference()
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id(uri, "serving")) as run:  # artifacts beside the sqlite file
        version = log_model(model, size, {"shards": str(shards), "kind": "student"}, "student")
    return str(version), run.info.run_id


@pytest.fixture(scope="module")
def served(tiny_shards, tmp_path_factory):
    """A registered student (version 1) with its place index built by the CLI and logged beside it."""
    folder = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    version, run_id = register_tiny_student(uri, tiny_shards, seed=0)
    assert version == "1"
    done = structvpr(uri, "index", "build", "--model", MODEL, "--shards", str(tiny_shards), "--out", str(folder / "index"))
    return {"uri": uri, "run_id": run_id, "index": folder / "index", "folder": folder, "shards": tiny_shards,
            "build_output": done.stdout}


def test_index_build_indexes_the_database_and_logs_it_beside_the_model(served):
    from mlflow.tracking import MlflowClient

    info = json.loads((served["index"] / "index.json").read_text())
    assert info["places"] == len(database_jpegs(served["shards"])) and info["split"] == "test"
    assert info["manifest_hash"] == Manifest.load(served["shards"]).hash
    logged = {Path(a.path).name for a in MlflowClient(served["uri"]).list_artifacts(served["run_id"], "place_index")}
    assert logged == {"index.faiss", "places.csv", "index.json"}
    assert f"runs:/{served['run_id']}/place_index" in served["build_output"]


def test_served_descriptors_are_the_ones_evaluation_computes(served):
    from structvpr.deploy.serving.localizer import Localizer
    from structvpr.platform.evaluation.encode import encode_split
    from structvpr.platform.store.references import load_branch

    model, trained_on = load_branch(MODEL)
    encoded = encode_split(model, str(served["shards"]), "test", "database", "cpu")
    jpegs = database_jpegs(served["shards"])
    served_desc = Localizer(model, tuple(trained_on["image_size"])).describe([jpegs[k] for k in encoded.keys])
    np.testing.assert_allclose(served_desc, encoded.descriptors, atol=1e-5)


def test_localize_finds_each_database_image_as_its_own_place_and_records_a_bad_one(served, tmp_path, monkeypatch,
                                                                                    capsys):
    jpegs = database_jpegs(served["shards"])
    keys = sorted(jpegs)[:3]
    for key in keys:
        (tmp_path / f"{key}.jpg").write_bytes(jpegs[key])
    (tmp_path / "zz-corrupt.jpg").write_bytes(jpegs[keys[0]][:200])  # truncated: decodes to nothing
    out = tmp_path / "places.csv"
    done = structvpr(served["uri"], "localize", "--model", MODEL, "--index", f"runs:/{served['run_id']}/place_index",
                     str(tmp_path), "--top-k", "3", "--out", str(out))
    assert "localized 3 of 4 images; 1 unreadable" in done.stderr
    rows = list(csv.DictReader(out.open()))
    top1 = {Path(r["image"]).stem: r for r in rows if r["rank"] == "1"}
    assert set(top1) == set(keys)
    assert all(top1[k]["key"] == k and float(top1[k]["score"]) > 0.999 for k in keys)
    assert sum(r["rank"] == "3" for r in rows) == 3
    (bad,) = [r for r in rows if r["error"]]
    assert bad["image"].endswith("zz-corrupt.jpg") and "cannot decode image" in bad["error"]
    code, out, _ = structvpr_here(served["uri"], monkeypatch, capsys, "localize", "--model", MODEL, "--index",
                                  str(served["index"]), str(tmp_path / f"{keys[0]}.jpg"), "--format", "json")
    as_json = json.loads(out)
    assert code == 0 and as_json[0]["places"][0]["key"] == keys[0] and len(as_json[0]["places"]) == 5


def test_an_index_of_another_model_is_refused(served, monkeypatch, capsys):
    version, _ = register_tiny_student(served["uri"], served["shards"], seed=1)
    code, _, err = structvpr_here(served["uri"], monkeypatch, capsys, "localize", "--model",
                                  f"models:/structvpr-student/{version}", "--index", str(served["index"]),
                                  str(served["index"] / "index.json"))
    assert code == 2 and "built with another model" in err and "structvpr index build" in err


def test_index_build_never_writes_into_a_folder_of_other_files(served, tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    build = ["index", "build", "--model", MODEL, "--shards", str(served["shards"])]
    code, _, err = structvpr_here(served["uri"], monkeypatch, capsys, *build, "--out", str(tmp_path))
    assert code == 2 and "holds other files" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    code, _, err = structvpr_here(served["uri"], monkeypatch, capsys, *build, "--out", str(served["index"]), "--no-log")
    assert code == 2 and "--overwrite" in err


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def images_request(*jpegs: bytes, top_k: int | None = None) -> bytes:
    payload = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(j).decode()] for j in jpegs]}}
    if top_k:
        payload["params"] = {"top_k": top_k}
    return json.dumps(payload).encode()


@pytest.fixture(scope="module")
def server(served):
    """`mlflow models serve` of the registered student on 127.0.0.1, stopped by its PID."""
    port = free_port()
    log = served["folder"] / "serve.log"
    env = venv_env({"MLFLOW_TRACKING_URI": served["uri"], "STRUCTVPR_MAX_BATCH": "4", "HF_HUB_OFFLINE": "1"})
    proc = spawn([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", MODEL, "--env-manager", "local",
                  "-h", "127.0.0.1", "-p", str(port), "-w", "1"], log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ping(url), 180, "mlflow models serve", log, proc)
        yield url, log
    finally:
        stop_group(proc.pid)


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_the_http_server_answers_places_and_readable_4xx_and_stays_up(served, server):
    url, log = server
    jpegs = database_jpegs(served["shards"])
    key = sorted(jpegs)[0]
    status, body = post(f"{url}/invocations", images_request(jpegs[key], top_k=2))
    assert status == 200, body
    (row,) = json.loads(body)["predictions"]
    assert [p["key"] for p in row["places"]][0] == key and len(row["places"]) == 2 and len(row["descriptor"]) == 32
    assert "place index runs:/" in log.read_text()  # found beside the model, not configured

    status, body = post(f"{url}/invocations", images_request(jpegs[key], jpegs[key][:100]))
    assert status == 400 and "image 1: cannot decode image" in body, body
    status, body = post(f"{url}/invocations", images_request(jpegs[key]), content_type="text/plain")
    assert status == 415 and "content types" in body, body
    status, body = post(f"{url}/invocations", images_request(*[jpegs[key]] * 5))
    assert status == 400 and "5 images in one request, over the limit of 4" in body, body
    status, body = post(f"{url}/invocations", json.dumps({"dataframe_split": {"columns": ["photo"], "data": [["x"]]}}).encode())
    assert status == 400 and "image" in body, body

    status, body = post(f"{url}/invocations", images_request(jpegs[key]))  # still up and answering
    assert status == 200 and json.loads(body)["predictions"][0]["places"][0]["key"] == key


def test_a_teacher_is_served_with_its_segmenter_and_refused_without_one(tmp_path):
    """The teacher path: JPEG -> the logged segmentation checkpoint's category map -> teacher descriptor."""
    import mlflow
    import pandas as pd

    from structvpr.datasets.class_maps import NUM_CATEGORIES
    from structvpr.datasets.images import encode_jpeg, rgb_from_bytes
    from structvpr.datasets.segmentation.checkpoint import SegCheckpoint, save_checkpoint
    from structvpr.datasets.segmentation.model import build_model
    from structvpr.datasets.segmentation.predictor import SegmentationPredictor
    from structvpr.platform.models import create_branch
    from structvpr.platform.store.logged_model import log_model

    size = (64, 48)
    torch.manual_seed(0)
    seg = save_checkpoint(SegCheckpoint(arch="FPN", encoder="resnet18", num_classes=NUM_CATEGORIES, class_map="categories",
                                        image_size=size, state_dict=build_model("FPN", "resnet18", NUM_CATEGORIES).state_dict(),
                                        metrics={}), tmp_path / "seg.pt")
    teacher = create_branch("test_resnet", NUM_CATEGORIES, "gem", 32, image_hw=size[::-1]).for_inference()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id(uri, "teacher-path")):
        log_model(teacher, size, {"kind": "teacher"}, "teacher", segmenter=str(seg))
        log_model(teacher, size, {"kind": "teacher"}, "teacher")  # version 2: no segmenter
    jpegs = [encode_jpeg((np.random.default_rng(i).random((48, 64, 3)) * 255).astype(np.uint8)) for i in range(2)]
    ids = SegmentationPredictor(str(seg), device="cpu", image_size=size).predict([rgb_from_bytes(j, size) for j in jpegs])
    with torch.no_grad():
        wanted = teacher.embed(torch.from_numpy(np.stack(ids))).numpy()
    served = mlflow.pyfunc.load_model("models:/structvpr-teacher/1").predict(pd.DataFrame({"image": jpegs}))
    np.testing.assert_allclose(np.stack(served["descriptor"]), wanted, atol=1e-5)
    with pytest.raises(Exception, match="needs a segmentation model"):
        mlflow.pyfunc.load_model("models:/structvpr-teacher/2")
