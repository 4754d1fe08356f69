"""Presets of the synthetic city: how big the city is, which conditions are rendered, at what size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from structvpr.datasets.records import DatasetError

MIN_SIDE = 16  # pixels: smaller renders hold no recognisable structure
ALL_QUERY_CONDITIONS = ("night", "dusk", "winter", "autumn", "fog", "repainted")


@dataclass(frozen=True)
class Preset:
    """Settings of one city; the image count follows from the grid, the place spacing and the conditions."""

    blocks_x: int  # blocks west to east; train, val and test are bands of this axis
    blocks_y: int  # blocks south to north
    place_spacing: float = 16.0  # metres between consecutive places along a street
    image_size: tuple[int, int] = (320, 240)  # width, height
    query_conditions: tuple[str, ...] = ALL_QUERY_CONDITIONS
    split_fractions: tuple[float, float, float] = (0.6, 0.15, 0.25)  # of the street length, train/val/test
    split_gap: float = 110.0  # metres without places between two splits' bands

    def __post_init__(self):
        if self.blocks_x < 4 or self.blocks_y < 2:
            raise DatasetError("a city needs at least 4 x 2 blocks to hold three separated splits")
        unknown = set(self.query_conditions) - set(ALL_QUERY_CONDITIONS)
        if unknown:
            raise DatasetError(f"unknown query conditions {sorted(unknown)}; choose from {ALL_QUERY_CONDITIONS}")
        if len(self.image_size) != 2 or min(self.image_size) < MIN_SIDE:
            size = "x".join(str(v) for v in self.image_size)
            raise DatasetError(f"--size must be WxH with both at least {MIN_SIDE} pixels, got {size}")

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    # Tests: a few hundred images in a few seconds. Test gets a larger share so recall is not noise.
    "tiny": Preset(
        blocks_x=6, blocks_y=2, place_spacing=22.0, image_size=(160, 120),
        query_conditions=("night", "winter", "fog", "repainted"), split_fractions=(0.45, 0.15, 0.40),
    ),
    # The demo: about two thousand images in a minute or two on 2 cores.
    "small": Preset(blocks_x=10, blocks_y=3, place_spacing=14.0),
    "medium": Preset(blocks_x=16, blocks_y=6, place_spacing=12.0),
    "large": Preset(blocks_x=30, blocks_y=10, place_spacing=10.0),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise DatasetError(f"unknown synth preset {name!r} (--preset); choose one of {sorted(PRESETS)}")
    return PRESETS[name]
