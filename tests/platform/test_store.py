"""The model store reads checkpoints and logged models as data: nothing a user points at runs code."""

from __future__ import annotations

import json
import pickle
import random
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from structvpr.datasets.images import encode_jpeg, rgb_from_bytes
from structvpr.platform.models import create_branch
from structvpr.platform.store.checkpoint import load_state, save_state, set_rng_state
from structvpr.platform.store.references import ModelSourceError, load_branch

TRAINED_ON = {"image_size": [64, 48], "shards": "/somewhere/shards", "kind": "student"}


class Payload:
    """Unpickling this creates `marker`: what a crafted file would do with a shell command instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def tiny_branch(in_chans: int = 3):
    torch.manual_seed(0)
    return create_branch("test_resnet", in_chans, "gem", 32, image_hw=(48, 64), num_classes=8)


def crafted_checkpoint(folder, marker):
    """A state.pt that looks like ours but carries a pickled payload in place of the weights."""
    path = folder / "state.pt"
    torch.save({"spec": tiny_branch().spec, "model": Payload(marker), "epoch": 1}, path)
    return path


def refusal(load, marker) -> str:
    """The one-line ModelSourceError `load()` raises; first of all, its payload must not have run."""
    try:
        load()
    except Exception as exc:  # the type is checked below, after the marker
        error = exc
    else:
        error = None
    assert not marker.exists(), f"loading ran the payload (then raised {error!r})"
    assert isinstance(error, ModelSourceError), repr(error)
    assert "\n" not in str(error), str(error)
    return str(error)


@pytest.fixture(scope="module")
def shards(tiny_shards):
    return tiny_shards


@pytest.mark.parametrize("as_folder", [False, True])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, as_folder):
    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path, marker)
    message = refusal(lambda: load_branch(str(tmp_path if as_folder else path)), marker)
    assert message.startswith(f"{path} holds a pickled Python object (") and "refused" in message, message


def test_eval_of_a_crafted_checkpoint_ends_with_one_line_and_runs_nothing(tmp_path, shards, capsys):
    from structvpr.cli import main

    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path, marker)
    code = main(["eval", "--model", str(path), "--shards", str(shards)])
    assert not marker.exists(), "eval ran the checkpoint's payload"
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"structvpr: error: {path} holds a pickled Python object"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def _write_bad_file(kind: str, path):
    if kind == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        save_state(path.parent, tiny_branch(), None, None, 1, {})
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "zip, not torch":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "hello")
    elif kind == "a tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "no spec":
        torch.save({"model": tiny_branch().state_dict()}, path)
    elif kind == "unknown backbone":
        branch = tiny_branch()
        torch.save({"spec": {**branch.spec, "backbone": "no_such_net"}, "model": branch.state_dict()}, path)
    elif kind == "weights of another branch":
        torch.save({"spec": tiny_branch().spec, "model": tiny_branch(8).state_dict()}, path)


@pytest.mark.parametrize("kind, says", [
    ("garbage", "not a structvpr checkpoint"), ("empty", "not a structvpr checkpoint"),
    ("truncated", "not a structvpr checkpoint"), ("zip, not torch", "not a structvpr checkpoint"),
    ("a tensor", "holds a Tensor"), ("no spec", r"without \['spec'\]"),
    ("unknown backbone", "cannot build .*no_such_net"), ("weights of another branch", "weights do not fit"),
])
def test_a_file_that_is_no_checkpoint_is_a_model_source_error_naming_it(tmp_path, kind, says):
    path = tmp_path / "state.pt"
    _write_bad_file(kind, path)
    with pytest.raises(ModelSourceError, match=says) as info:
        load_branch(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_checkpoint_is_data_only_and_restores_every_rng_stream(tmp_path):
    model = tiny_branch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    model(torch.randn(2, 3, 48, 64)).sum().backward()
    optimizer.step()
    scheduler.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # a cached gaussian is part of numpy's state too
    path = save_state(tmp_path, model, optimizer, scheduler, 1, {"best": np.float64(0.5), "history": [{"r": 1.0}]})
    expected = (random.random(), np.random.standard_normal(3).tolist(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)

    state = torch.load(path, weights_only=True)  # no pickled object at all
    assert state["best"] == 0.5 and type(state["best"]) is float
    set_rng_state(state["rng"])
    again = (random.random(), np.random.standard_normal(3).tolist(), np.random.rand(), torch.rand(3))
    assert again[:3] == expected[:3] and torch.equal(again[3], expected[3])
    assert load_state(tmp_path)["optimizer"]["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    import mlflow

    from structvpr.platform.store.tracking import experiment_id

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return experiment_id(uri, "store-test")


def test_a_logged_model_round_trips_as_data_and_runs_no_logged_code(tmp_path, tracking):
    import mlflow

    from structvpr.platform.store.logged_model import log_model

    model = tiny_branch().for_inference()
    with mlflow.start_run(experiment_id=tracking) as run:
        assert log_model(model, (64, 48), TRAINED_ON, "student") == 1
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        expected = model(x)
    # MLflow's own tools see a pyfunc that takes JPEG bytes (at any size: resized as the shards were) and serves it.
    jpegs = [encode_jpeg((np.random.default_rng(i).random((96, 128, 3)) * 255).astype(np.uint8)) for i in range(2)]
    pixels = torch.from_numpy(np.stack([rgb_from_bytes(j, (64, 48)) for j in jpegs])).permute(0, 3, 1, 2)
    with torch.no_grad():
        wanted = model.embed(pixels).numpy()
    served = mlflow.pyfunc.load_model("models:/structvpr-student/1").predict(pd.DataFrame({"image": jpegs}))
    np.testing.assert_allclose(np.stack(served["descriptor"]), wanted, rtol=1e-5, atol=1e-6)
    assert "places" not in served  # no place index logged beside it
    # Code in the artifact is never run by load_branch: make it leave a marker if it were.
    marker = tmp_path / "ran"
    for code in (tmp_path / "mlartifacts").rglob("served_model.py"):
        code.write_text(f"open({str(marker)!r}, 'w')\n")
    for ref in ("models:/structvpr-student/1", f"runs:/{run.info.run_id}/model"):
        loaded, trained_on = load_branch(ref)
        with torch.no_grad():
            assert torch.equal(loaded(x), expected), ref
        assert trained_on == TRAINED_ON
    assert not marker.exists()


def _log_crafted_model(tmp_path, marker, with_spec: bool) -> None:
    """A run whose `model` folder holds pickles (an old pytorch-flavour model, or a malicious one), registered."""
    import mlflow

    folder = tmp_path / "crafted"
    (folder / "data").mkdir(parents=True)
    (folder / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  pytorch:\n    model_data: data\n    pytorch_version: " + torch.__version__ +
        "\n  python_function:\n    loader_module: mlflow.pyfunc.model\n    python_model: python_model.pkl\n")
    torch.save(Payload(marker), folder / "data" / "model.pth")
    (folder / "data" / "pickle_module_info.txt").write_text("pickle")
    (folder / "python_model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    if with_spec:  # the new layout's names, with a pickle where the safetensors belong
        (folder / "artifacts").mkdir()
        (folder / "artifacts" / "spec.json").write_text(json.dumps(tiny_branch().spec))
        (folder / "artifacts" / "trained_on.json").write_text(json.dumps(TRAINED_ON))
        torch.save(Payload(marker), folder / "artifacts" / "weights.safetensors")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), "model")
    mlflow.register_model(f"runs:/{run.info.run_id}/model", "structvpr-teacher")


@pytest.mark.parametrize("with_spec, says", [(False, "holds no spec.json.*re-register"),
                                             (True, "weights.safetensors is unreadable.*re-register")])
def test_a_crafted_logged_model_is_refused_and_runs_nothing(tmp_path, tracking, with_spec, says):
    import mlflow

    marker = tmp_path / "ran"
    mlflow.set_experiment(experiment_id=tracking)
    _log_crafted_model(tmp_path, marker, with_spec)
    message = refusal(lambda: load_branch("models:/structvpr-teacher/1"), marker)
    assert message.startswith("models:/structvpr-teacher/1") and re.search(says, message), message


@pytest.mark.parametrize("size", [5, "64x48", [64], [64, -48], [64.5, 48]])
def test_a_malformed_training_record_is_a_model_source_error(tiny_shards, size):
    from structvpr.datasets.shards.manifest import Manifest
    from structvpr.platform.store.references import check_fits_shards

    with pytest.raises(ModelSourceError, match="image_size"):
        check_fits_shards(tiny_branch(), {"image_size": size}, Manifest.load(tiny_shards), "model")
