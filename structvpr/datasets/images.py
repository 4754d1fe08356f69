"""Loading RGB images and label maps safely: a bad file becomes a Skip with a reason, never a crash."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from structvpr.datasets.records import Skip

JPEG_MAGIC = b"\xff\xd8"
# PIL raises all of these for zero-byte, truncated, non-image and corrupt files.
_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


class SkipInput(Exception):
    """Raised by the loaders below; carries the Skip to record."""

    def __init__(self, skip: Skip):
        super().__init__(skip.reason)
        self.skip = skip


def load_rgb(path: str | Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image as RGB uint8 HxWx3, resized to size=(W, H) if given; also returns the original (W, H)."""
    path = str(path)
    try:
        _check_regular_file(path)
        with Image.open(path) as img:
            original = img.size  # before draft(), which shrinks it
            return _rgb_at_size(img, size), original
    except _DECODE_ERRORS as exc:
        raise SkipInput(_unreadable(path, exc)) from None


def rgb_from_bytes(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file's bytes as RGB uint8 HxWx3, resized to size=(W, H) the way shards are built (serving).

    Raises ValueError with the decoder's reason for bytes that are not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _rgb_at_size(img, size)
    except _DECODE_ERRORS as exc:
        raise ValueError(f"cannot decode image ({exc}); it is truncated, corrupt or not an image") from None


def _rgb_at_size(img: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    if size is not None:
        # JPEG can decode at 1/2, 1/4, 1/8 scale directly: much faster for large sources.
        img.draft("RGB", (size[0], size[1]))
    img.load()  # forces the full decode, so truncated files fail here and not later
    img = img.convert("RGB")
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), Image.BILINEAR)
    return np.asarray(img)


def _unreadable(path: str, exc: Exception) -> Skip:
    if isinstance(exc, OSError) and exc.errno is not None:  # the file system's error, not the decoder's
        reason = f"cannot read the file ({exc.strerror}); check that it exists and that structvpr's user may read it"
    else:
        reason = f"cannot decode image ({exc}); the file is truncated, corrupt or not an image"
    return Skip(path, reason, "unreadable_image")


def _check_regular_file(path: str) -> None:
    """Before opening: an empty file, or one that is no longer a regular file (a pipe would block), is a skip."""
    mode = Path(path).stat()
    if not stat.S_ISREG(mode.st_mode):
        raise SkipInput(Skip(path, "not a regular file (a folder, a pipe or a device); put the image there or remove it", "unreadable_image"))
    if mode.st_size == 0:
        raise SkipInput(Skip(path, "zero-byte image file; re-download or remove it", "unreadable_image"))


def load_label(
    path: str | None,
    image_path: str,
    expected_size: tuple[int, int],
    size: tuple[int, int] | None,
    valid_ids: np.ndarray,
) -> np.ndarray:
    """Decode a uint8 category map, checked against its image's size and the valid ids, then resized (nearest)."""
    if path is None or not Path(path).is_file():
        where = f" (expected {path})" if path else ""
        raise SkipInput(Skip(image_path, f"no ground-truth label for this image{where}", "missing_label"))
    try:
        with Image.open(path) as lab:
            lab.load()
            if lab.mode not in ("L", "P", "I", "I;16"):
                raise SkipInput(Skip(image_path, f"label {path} has mode {lab.mode}; expected single-channel uint8 ids", "bad_label"))
            ids = np.asarray(lab)
    except _DECODE_ERRORS as exc:
        raise SkipInput(Skip(image_path, f"cannot decode label {path} ({exc})", "bad_label")) from None
    if (ids.shape[1], ids.shape[0]) != tuple(expected_size):
        raise SkipInput(Skip(
            image_path,
            f"label {path} is {ids.shape[1]}x{ids.shape[0]} but the image is {expected_size[0]}x{expected_size[1]}; labels must match their image",
            "label_size",
        ))
    unknown = np.setdiff1d(np.unique(ids), valid_ids)
    if unknown.size:
        raise SkipInput(Skip(
            image_path,
            f"label {path} has ids {unknown.tolist()} outside the class map {valid_ids.tolist()}",
            "label_ids",
        ))
    ids = ids.astype(np.uint8)
    if size is not None and (ids.shape[1], ids.shape[0]) != tuple(size):
        ids = np.asarray(Image.fromarray(ids).resize(tuple(size), Image.NEAREST))
    return ids


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(ids: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_rgb(data: bytes) -> np.ndarray:
    """Image bytes -> RGB uint8 HxWx3.

    JPEGs go through simplejpeg (libjpeg-turbo without PIL's per-image Python work: 1.6-1.8x PIL's
    rate on shard images, the same pixels); anything simplejpeg refuses, and other formats, through PIL.
    """
    if data[:2] == JPEG_MAGIC:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # CMYK, or damaged: PIL decodes it or raises its own clear error below
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        # convert() copies even an RGB image; the shards hold RGB JPEGs, so skip it when it would be a no-op.
        return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def decode_ids(data: bytes) -> np.ndarray:
    """Decode a seg.png as class ids; webdataset's "pil" decoder would turn it into RGB."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)
