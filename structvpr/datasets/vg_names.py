"""The VG '@' file name: @UTM_east@UTM_north@zone@letter@lat@lon@pano_id@tile@heading@pitch@roll@height@timestamp@note@.jpg"""

from __future__ import annotations

from dataclasses import dataclass

FIELDS = (
    "utm_east", "utm_north", "utm_zone", "utm_letter", "lat", "lon", "pano_id",
    "tile", "heading", "pitch", "roll", "height", "timestamp", "note",
)


@dataclass(frozen=True)
class VGName:
    utm_east: float
    utm_north: float
    utm_zone: str = ""
    utm_letter: str = ""
    lat: str = ""
    lon: str = ""
    pano_id: str = ""
    tile: str = ""
    heading: str = ""
    pitch: str = ""
    roll: str = ""
    height: str = ""
    timestamp: str = ""
    note: str = ""

    @property
    def heading_deg(self) -> float | None:
        try:
            return float(self.heading) if self.heading else None
        except ValueError:
            return None


def format_vg_name(name: VGName, ext: str = ".jpg") -> str:
    values = [getattr(name, f) for f in FIELDS]
    values[0] = f"{name.utm_east:.2f}"
    values[1] = f"{name.utm_north:.2f}"
    for v in values[2:]:
        if "@" in str(v):
            raise ValueError(f"VG name fields cannot contain '@': {v!r}")
    return "@" + "@".join(str(v) for v in values) + "@" + ext


def parse_vg_name(filename: str) -> VGName:
    """Parse a VG file name; raises ValueError saying what is wrong with it."""
    stem = filename.rsplit("/", 1)[-1]
    parts = stem.split("@")
    # '' before the first '@', 14 fields, then the extension after the last '@'.
    if len(parts) < 4 or parts[0] != "":
        raise ValueError(f"not a VG '@' name (expected @UTM_east@UTM_north@...@.jpg): {stem!r}")
    fields = parts[1:-1]
    try:
        east, north = float(fields[0]), float(fields[1])
    except (ValueError, IndexError):
        raise ValueError(f"VG name without numeric UTM east/north in its first two fields: {stem!r}") from None
    rest = (fields[2:] + [""] * len(FIELDS))[: len(FIELDS) - 2]
    return VGName(east, north, *rest)
