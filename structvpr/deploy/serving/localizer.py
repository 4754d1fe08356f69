"""Images in, descriptors and top-k places out: what the served model and `structvpr localize` both run.

An image is decoded and resized to the model's training size the way the shard builder does it
(datasets/images.py), so a database image sent as it sits in the shards gets the descriptor evaluation
gave it. A teacher (segmentation input) needs a segmenter: the RGB image is segmented first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from structvpr.datasets.images import rgb_from_bytes
from structvpr.deploy.serving.place_index import PlaceIndex

DEFAULT_MAX_BATCH = 64
DEFAULT_TOP_K = 5


class RequestError(ValueError):
    """Input the caller must fix: an image that does not decode, an empty or oversized batch."""


@dataclass
class Localizer:
    model: nn.Module  # ready for inference (for_inference())
    image_size: tuple[int, int]  # (W, H) the model was trained at
    index: PlaceIndex | None = None
    segmenter: object | None = None  # a SegmentationPredictor, for a segmentation-input model
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self):
        if getattr(self.model, "input_kind", "rgb") == "seg" and self.segmenter is None:
            raise ValueError("this model reads segmentation maps (a teacher): serving it needs a segmentation model "
                             "to segment each image first")

    def decode(self, blobs: list[bytes]) -> list[np.ndarray]:
        """Every image as RGB at the model's size; all bad images named at once, by their position."""
        if not blobs:
            raise RequestError("no images: send at least one JPEG in the 'image' column")
        if len(blobs) > self.max_batch:
            raise RequestError(f"{len(blobs)} images in one request, over the limit of {self.max_batch}; "
                               f"send at most {self.max_batch} per request")
        images, problems = [], []
        for i, blob in enumerate(blobs):
            try:
                if not isinstance(blob, (bytes, bytearray)) or not blob:
                    raise ValueError("empty or not binary; send the JPEG's bytes, base64-encoded in JSON")
                images.append(rgb_from_bytes(bytes(blob), self.image_size))
            except ValueError as exc:
                problems.append(f"image {i}: {exc}")
        if problems:
            raise RequestError("; ".join(problems))
        return images

    def describe(self, blobs: list[bytes]) -> np.ndarray:
        """L2-normalised descriptors [B, dim], float32."""
        return self.describe_images(self.decode(blobs))

    @torch.no_grad()
    def describe_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Descriptors of decoded RGB images already at the model's size."""
        if self.segmenter is not None:
            raw = torch.from_numpy(np.stack(self.segmenter.predict(images)))
        else:
            raw = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        return self.model.embed(raw).float().numpy()

    def localize(self, blobs: list[bytes], top_k: int = DEFAULT_TOP_K) -> tuple[np.ndarray, list[list[dict]] | None]:
        """Descriptors, and the top-k places of each image when there is an index."""
        descriptors = self.describe(blobs)
        places = self.index.search(descriptors, top_k) if self.index is not None else None
        return descriptors, places
