"""The synthetic city: a procedural multi-condition street grid rendered on the CPU, written in the VG layout.

`generate_city(out, preset, seed)` is the entry point of `structvpr data synth OUT`. A module per role:
presets (sizes), city (layout), traffic (cars and people per traversal), camera (poses and names),
render (the ray-caster), sprites (billboard shapes), conditions (light, season, fog, paint),
generate (workers and files), structure_check (the RGB vs label retrieval check).
"""

from structvpr.datasets.synth.conditions import CONDITIONS
from structvpr.datasets.synth.generate import generate_city
from structvpr.datasets.synth.presets import PRESETS, Preset

__all__ = ["CONDITIONS", "PRESETS", "Preset", "generate_city"]
