"""`structvpr demo`: the main job end to end (pipeline.py), its presets, stages and report."""

from structvpr.demo.pipeline import run_demo

__all__ = ["run_demo"]
