"""Places for training: dataset ids first, else queries anchored at the nearest database image facing the same way."""

from structvpr.datasets.places import PlaceOptions, group_places, pick_views
from structvpr.datasets.records import ImageRecord


def rec(name, role, east, north=0.0, heading=None, place=None, condition=""):
    return ImageRecord(f"/d/{name}", name, "train", role, east, north, place, condition, heading)


def test_queries_join_nearest_database_image_facing_the_same_way():
    records = [
        rec("a", "database", 0, heading=0), rec("b", "database", 12, heading=0), rec("c", "database", 12, heading=180),
        rec("q1", "query", 3, heading=10), rec("q2", "query", 11, heading=170), rec("q3", "query", 11, heading=20),
        rec("far", "query", 500, heading=0),
    ]
    places, skipped = group_places(records, PlaceOptions(radius_m=10))
    names = {k: [r.name for r in v] for k, v in places.items()}
    assert sorted(names.values()) == [["a", "q1"], ["b", "q3"], ["c", "q2"]]
    assert [s.kind for s in skipped] == ["no_place"] and skipped[0].path == "/d/far"


def test_dataset_place_ids_win_over_positions():
    records = [rec("a", "database", 0, place="x"), rec("b", "database", 1000, place="x"), rec("c", "database", 0, place="y")]
    places, skipped = group_places(records)
    assert {k: len(v) for k, v in places.items()} == {"x": 2, "y": 1} and not skipped


def test_pick_views_spreads_over_conditions():
    images = [rec(f"d{i}", "database", 0, condition="day") for i in range(4)] + [rec("n", "query", 0, condition="night")]
    assert {r.condition for r in pick_views(images, 2)} == {"day", "night"}
    assert len(pick_views(images, 10)) == 5
