"""Reader of the VG benchmark layout: ROOT/images/{split}/{database,queries}/@UTM_east@UTM_north@...@.jpg.

Layout and name fields as published by gmberton/VPR-datasets-downloader (README.md, "The directory
tree that is generated") for the Deep Visual Geo-localization Benchmark (Berton et al., CVPR 2022):
`@ UTM_east @ UTM_north @ UTM_zone_number @ UTM_zone_letter @ latitude @ longitude @ pano_id @
tile_num @ heading @ pitch @ roll @ height @ timestamp @ note @ extension`. Ground-truth category
maps, where a dataset has them, mirror the image tree: ROOT/labels/{split}/{database,queries}/<stem>.png.
"""

from __future__ import annotations

from pathlib import Path

from structvpr.datasets.formats.registry import register
from structvpr.datasets.formats._common import absolute, collect, finite_utm, not_a_file, require_images
from structvpr.datasets.records import SPLITS, ImageRecord, Listing, Skip
from structvpr.datasets.vg_names import parse_vg_name

ROLE_FOLDERS = (("database", "database"), ("queries", "query"))
LAYOUT = "ROOT/images/{train,val,test}/{database,queries}/@UTM_east@UTM_north@...@.jpg"
VALID_NAME = "@UTM_east@UTM_north@zone@letter@lat@lon@pano_id@tile@heading@pitch@roll@height@timestamp@note@.jpg"


class VGReader:
    name = "vg"

    def splits(self, root: Path) -> list[str]:
        return [s for s in SPLITS if (Path(root) / "images" / s).is_dir()]

    def read(self, root: Path, split: str) -> Listing:
        root = Path(root)
        # Check both folders before reading either, so a broken split fails before any work.
        folders = [
            (require_images(root / "images" / split / folder, LAYOUT), role, _label_folder(root, split, folder))
            for folder, role in ROLE_FOLDERS
        ]
        return collect(_entry(path, split, role, labels) for images, role, labels in folders for path in images)


def _label_folder(root: Path, split: str, folder: str) -> Path | None:
    # No labels tree at all means the dataset has none; a tree with holes is left to the shard builder.
    labels_root = root / "labels"
    return labels_root / split / folder if labels_root.is_dir() else None


def _entry(path: Path, split: str, role: str, labels: Path | None) -> ImageRecord | Skip:
    skip = not_a_file(path)
    if skip is not None:
        return skip
    try:
        vg = parse_vg_name(path.name)
    except ValueError as err:
        return Skip(absolute(path), f"{err}; a valid VG name looks like {VALID_NAME}", "bad_name")
    if not finite_utm(vg.utm_east, vg.utm_north):
        return Skip(absolute(path), f"VG name with non-finite UTM east/north: {path.name!r}", "bad_name")
    label = labels / f"{path.stem}.png" if labels is not None else None
    return ImageRecord(
        path=absolute(path),
        name=path.name,
        split=split,
        role=role,
        utm_east=vg.utm_east,
        utm_north=vg.utm_north,
        # pano_id is no place id: in public VG sets (Pitts30k) queries and database number panoramas apart.
        place_id=None,
        condition=vg.note,
        heading=vg.heading_deg,
        label_path=absolute(label) if label is not None and label.is_file() else None,
        source="vg",
    )


register(VGReader())
