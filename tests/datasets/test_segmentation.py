"""Segmentation: labelled data listing, a tiny training run, checkpoints and the predictor."""

import json
import os
import pickle

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download weights in tests

import numpy as np
import pytest
import torch
from PIL import Image

from structvpr.datasets.class_maps import CATEGORIES
from structvpr.datasets.records import DatasetError
from structvpr.datasets.segmentation import (
    CheckpointError, LabelledPair, SegmentationModelError, SegmentationPredictor, labelled_splits,
    list_labelled, load_checkpoint, read_pair, save_checkpoint, segmentation_scores, train_segmentation,
)

W, H = 64, 48
CATEGORIES_BY_NAME = {name: i for i, name in CATEGORIES.items()}
FLAT, CONSTRUCTION, NATURE, SKY, VEHICLE = 1, 2, 4, 5, 7
COLOURS = {FLAT: (90, 90, 95), CONSTRUCTION: (170, 110, 80), NATURE: (40, 140, 50), SKY: (120, 170, 235),
           VEHICLE: (200, 30, 30)}


def make_scene(rng: np.random.Generator, w: int = W, h: int = H) -> tuple[np.ndarray, np.ndarray]:
    """A street of known layout: sky band, road band, a building, a tree and maybe a car; noisy colours."""
    label = np.full((h, w), FLAT, np.uint8)
    horizon, road = rng.integers(h // 4, h // 2), rng.integers(h * 2 // 3, h - 4)
    label[:horizon] = SKY
    label[horizon:road] = NATURE
    x0 = rng.integers(0, w // 2)
    label[rng.integers(2, horizon) : road, x0 : x0 + rng.integers(w // 4, w // 2)] = CONSTRUCTION
    if rng.random() < 0.7:
        cx = rng.integers(0, w - 12)
        label[road - 6 : road + 2, cx : cx + 12] = VEHICLE
    rgb = np.zeros((h, w, 3), np.float32)
    for cat, colour in COLOURS.items():
        rgb[label == cat] = colour
    rgb *= rng.uniform(0.7, 1.3)  # lighting changes between images
    rgb += rng.normal(0, 12, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), label


def write_vg_tree(root, counts: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for i in range(n):
            role = "database" if i % 2 else "queries"
            name = f"@{500000 + i:.2f}@{4000000 + i:.2f}@10@S@@@@@@@@@@@"
            rgb, label = make_scene(rng)
            (root / "images" / split / role).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / role).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(root / "images" / split / role / f"{name}.jpg", quality=95)
            Image.fromarray(label).save(root / "labels" / split / role / f"{name}.png")
    (root / "labels" / "classes.json").write_text(json.dumps({"categories": CATEGORIES}))


def val_data(root):
    found = list_labelled(root, "val")
    return [read_pair(p, found.class_map) for p in found.pairs]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    write_vg_tree(root, {"train": 24, "val": 8})
    ckpt = root / "seg.pt"
    metrics = train_segmentation(root, ckpt, epochs=20, image_size=(W, H), batch_size=8, lr=3e-3,
                                 progress=False, max_steps=40)
    return root, ckpt, metrics


def test_training_learns(trained):
    root, ckpt, metrics = trained
    assert ckpt.is_file() and metrics["steps"] == 40
    assert metrics["train_loss"] < 0.5 * metrics["first_epoch_loss"]
    # Chance over the five categories present is about 0.2 mIoU.
    assert metrics["val_miou"] > 0.6, metrics["history"][-1]
    assert metrics["val_pixel_acc"] > 0.85
    assert metrics["images_per_s"] > 0
    print(f"\nseg train: {metrics['images_per_s']:.1f} img/s, val mIoU {metrics['val_miou']:.3f}")


def test_predictor_scores_at_full_size(trained):
    root, ckpt, _ = trained
    pairs = val_data(root)
    predictor = SegmentationPredictor(str(ckpt), device="cpu", batch_size=4)
    preds = predictor.predict([rgb for rgb, _ in pairs])
    assert [p.shape for p in preds] == [lab.shape for _, lab in pairs]
    result = segmentation_scores(preds, [lab for _, lab in pairs])
    assert result["miou"] > 0.6, result
    print(f"\npredictor val mIoU {result['miou']:.3f}")


def test_checkpoint_round_trip_gives_identical_predictions(trained, tmp_path):
    root, ckpt, metrics = trained
    loaded = load_checkpoint(ckpt)
    assert (loaded.arch, loaded.num_classes, loaded.image_size) == ("FPN", 8, (W, H))
    assert loaded.class_map == "categories" and loaded.metrics["steps"] == metrics["steps"]
    copy = save_checkpoint(loaded, tmp_path / "copy.pt")
    images = [rgb for rgb, _ in val_data(root)[:3]]
    first = SegmentationPredictor(str(ckpt), device="cpu").predict(images)
    second = SegmentationPredictor(str(copy), device="cpu").predict(images)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_predictor_keeps_odd_sizes_and_pickles(trained):
    _, ckpt, _ = trained
    predictor = SegmentationPredictor(str(ckpt), device="cpu", batch_size=2)
    assert predictor.model_id.startswith("ckpt:seg.pt:") and len(predictor.model_id.split(":")[-1]) == 12
    rng = np.random.default_rng(1)
    sizes = [(53, 37), (29, 101), (53, 37), (7, 5), (200, 150)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    preds = predictor.predict(images)
    for image, pred in zip(images, preds):
        assert pred.shape == image.shape[:2] and pred.dtype == np.uint8 and pred.max() < len(CATEGORIES)
    clone = pickle.loads(pickle.dumps(predictor))
    assert clone.model_id == predictor.model_id
    assert np.array_equal(clone.predict(images[:1])[0], preds[0])
    with pytest.raises(ValueError, match="uint8 RGB"):
        predictor.predict([images[0][..., 0]])


def test_ground_truth_predictor():
    predictor = SegmentationPredictor("gt")
    assert predictor.is_ground_truth and predictor.model_id == "gt"
    with pytest.raises(SegmentationModelError, match="ground-truth"):
        predictor.predict([np.zeros((4, 4, 3), np.uint8)])


def test_bad_checkpoints_are_named(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt"):
        SegmentationPredictor(str(text))
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.pt"):
        load_checkpoint(other)
    with pytest.raises(SegmentationModelError, match="does not exist"):
        SegmentationPredictor(str(tmp_path / "missing.pt"))


def test_hub_offline_fails_clearly(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SegmentationModelError, match="could not download.*local checkpoint"):
        SegmentationPredictor("hub:smp-hub/segformer-b0-512x1024-city-160k")
    with pytest.raises(SegmentationModelError, match="could not download"):
        SegmentationPredictor("smp-hub/no-such-model-here")


def test_vg_listing_counts_missing_labels(tmp_path):
    write_vg_tree(tmp_path, {"train": 4, "val": 2})
    assert labelled_splits(tmp_path) == ["train", "val"]
    orphan = tmp_path / "labels" / "train" / "queries"
    next(orphan.glob("*.png")).unlink()
    found = list_labelled(tmp_path, "train")
    assert (len(found.pairs), len(found.skipped), found.class_map.name) == (3, 1, "categories")
    assert "no label file" in found.skipped[0].reason
    with pytest.raises(DatasetError, match="splits present"):
        list_labelled(tmp_path, "test")


def test_cityscapes_listing_and_label_ids(tmp_path):
    for split, city in [("train", "aachen"), ("val", "lindau")]:
        (tmp_path / "leftImg8bit" / split / city).mkdir(parents=True)
        (tmp_path / "gtFine" / split / city).mkdir(parents=True)
        for i in range(2):
            stem = f"{city}_{i:06d}_000019"
            Image.new("RGB", (8, 4)).save(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            if i == 0:
                ids = np.array([[7] * 8, [23] * 8, [24] * 8, [26] * 8], np.uint8)  # road, sky, person, car
                Image.fromarray(ids).save(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    found = list_labelled(tmp_path, "train")
    assert (found.layout, found.class_map.name) == ("cityscapes", "cityscapes34")
    assert (len(found.pairs), len(found.skipped)) == (1, 1)
    _, cats = read_pair(found.pairs[0], found.class_map)
    assert cats[:, 0].tolist() == [1, 5, 6, 7]


def test_bad_labels_are_named(tmp_path):
    write_vg_tree(tmp_path, {"train": 2})
    found = list_labelled(tmp_path, "train")
    pair = found.pairs[0]
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(pair.label)
    with pytest.raises(DatasetError, match=f"{os.path.basename(pair.label)}.*must match"):
        read_pair(pair, found.class_map)
    Image.fromarray(np.full((H, W), 200, np.uint8)).save(pair.label)
    with pytest.raises(DatasetError, match=r"ids \[200\]"):
        read_pair(LabelledPair(pair.image, pair.label), found.class_map)
    with pytest.raises(DatasetError, match=os.path.basename(pair.label)):
        train_segmentation(tmp_path, tmp_path / "x.pt", epochs=1, image_size=(W, H), batch_size=2,
                           encoder="resnet18", progress=False, max_steps=1)


def test_pretrained_folder_maps_its_classes_to_categories(tmp_path):
    import segmentation_models_pytorch as smp

    model = smp.create_model("Unet", "resnet18", encoder_weights=None, classes=19, encoder_depth=3,
                             decoder_channels=(32, 16, 8))
    head = model.segmentation_head[0]
    with torch.no_grad():  # a model that says "sky" (Cityscapes train id 10) everywhere
        head.weight.zero_()
        head.bias.zero_()
        head.bias[10] = 10.0
    model.save_pretrained(tmp_path / "city")
    predictor = SegmentationPredictor(str(tmp_path / "city"), device="cpu")
    assert predictor.model_id.startswith("dir:city:") and predictor.class_map.name == "cityscapes19"
    (pred,) = predictor.predict([np.zeros((37, 53, 3), np.uint8)])
    assert pred.shape == (37, 53) and (pred == CATEGORIES_BY_NAME["sky"]).all()
    with pytest.raises(SegmentationModelError, match="does not name"):
        SegmentationPredictor(str(tmp_path / "city"), device="cpu", class_map="categories")
