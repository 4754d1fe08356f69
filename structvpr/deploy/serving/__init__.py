"""Serving: JPEG bytes -> descriptors -> top-k places; the MLflow pyfunc, the place index, `index build`, `localize`."""
