"""Class maps: built-in LUTs merge source classes into the structural categories."""

import json

import numpy as np
import pytest

from structvpr.datasets.class_maps import CATEGORIES, available_class_maps, load_class_map
from structvpr.datasets.records import DatasetError

CAT = {name: i for i, name in CATEGORIES.items()}


def test_builtin_maps_ship_with_the_package():
    assert {"categories", "cityscapes19", "cityscapes34", "ade20k150"} <= set(available_class_maps())
    for name in available_class_maps():
        cmap = load_class_map(name)
        assert cmap.name == name
        assert cmap.categories == CATEGORIES
        assert cmap.lookup.shape == (256,) and cmap.lookup.dtype == np.uint8


def test_cityscapes19_train_ids():
    lut = load_class_map("cityscapes19").lookup
    assert lut[0] == CAT["flat"]  # road
    assert lut[1] == CAT["flat"]  # sidewalk
    assert lut[2] == CAT["construction"]  # building
    assert lut[5] == CAT["object"]  # pole
    assert lut[8] == CAT["nature"]  # vegetation
    assert lut[10] == CAT["sky"]
    assert lut[11] == CAT["human"]  # person
    assert lut[12] == CAT["human"]  # rider
    assert lut[13] == CAT["vehicle"]  # car
    assert lut[18] == CAT["vehicle"]  # bicycle
    assert lut[255] == CAT["void"]  # ignore


def test_cityscapes34_label_ids_agree_with_train_ids():
    by_label = load_class_map("cityscapes34").lookup
    by_train = load_class_map("cityscapes19").lookup
    # labelId -> trainId for the 19 evaluated classes (cityscapesScripts label table).
    label_to_train = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                      24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id, train_id in label_to_train.items():
        assert by_label[label_id] == by_train[train_id], label_id
    assert all(by_label[i] == CAT["void"] for i in range(7))  # unlabeled .. ground
    assert by_label[9] == CAT["flat"] and by_label[15] == CAT["construction"] and by_label[29] == CAT["vehicle"]


def test_ade20k150_is_complete_and_sensible():
    cmap = load_class_map("ade20k150")
    assert sorted(cmap.mapping) == list(range(150))
    lut = cmap.lookup
    expected = {
        2: "sky", 6: "flat", 11: "flat", 3: "flat", 0: "construction", 1: "construction", 25: "construction",
        48: "construction", 32: "construction", 93: "object", 43: "object", 136: "object", 87: "object",
        4: "nature", 9: "nature", 17: "nature", 72: "nature", 12: "human", 20: "vehicle", 80: "vehicle",
        83: "vehicle", 102: "vehicle", 127: "vehicle", 7: "void", 19: "void", 149: "void",
    }
    for ade_id, category in expected.items():
        assert lut[ade_id] == CAT[category], ade_id


def test_apply_and_unknown_ids():
    cmap = load_class_map("cityscapes34")
    ids = np.array([[7, 23], [24, 26]], dtype=np.uint8)
    assert cmap.apply(ids).tolist() == [[1, 5], [6, 7]]
    assert cmap.apply(ids.astype(np.int64)).dtype == np.uint8
    assert cmap.unknown_ids(np.array([7, 40, 200])) == [40, 200]
    with pytest.raises(ValueError):
        cmap.apply(np.array([300]))


def test_to_dict_is_json_and_round_trips(tmp_path):
    cmap = load_class_map("cityscapes19")
    doc = json.loads(json.dumps(cmap.to_dict()))
    assert doc["name"] == "cityscapes19" and doc["map"]["10"] == CAT["sky"]
    path = tmp_path / "mine.yaml"
    path.write_text(json.dumps({"name": "mine", **{k: doc[k] for k in ("categories", "map")}}))
    assert np.array_equal(load_class_map(path).lookup, cmap.lookup)


def test_unknown_name_lists_available_maps():
    with pytest.raises(DatasetError, match="cityscapes19"):
        load_class_map("no-such-map")


def test_bad_yaml_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmap: {0: 9}\n")
    with pytest.raises(DatasetError, match="bad.yaml"):
        load_class_map(path)
