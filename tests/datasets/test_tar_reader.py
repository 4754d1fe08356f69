"""The shard tar reader: the same samples as webdataset's tarfile path, on plain tars and on tars it must hand over."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from structvpr.datasets.images import decode_rgb, encode_jpeg
from structvpr.datasets.shards.tar_reader import ShardReadError, read_tar_samples, tar_samples


def samples(n: int, long_names: bool = False) -> list[dict]:
    stem = "x" * 120 + "_" if long_names else ""  # > 100 characters: needs a pax (or GNU) header
    return [{"__key__": f"{stem}sample_{i:04d}", "jpg": bytes([i]) * (100 + 37 * i), "json": b'{"i": %d}' % i,
             "seg.png": b"\x89PNG" + bytes(range(i % 200))} for i in range(n)]


def write_plain(path, items) -> str:
    """As shard_writer writes: webdataset's TarWriter with an integer mtime (ustar headers only)."""
    with wds.TarWriter(str(path), mtime=0) as sink:
        for item in items:
            sink.write(item)
    return str(path)


def write_with_pax(path, items, from_index: int) -> str:
    """Plain members first, then members under pax headers (a float mtime, as other tools write)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i, item in enumerate(items):
            for ext in ("jpg", "json", "seg.png"):
                info = tarfile.TarInfo(f"{item['__key__']}.{ext}")
                info.size, info.mtime = len(item[ext]), (1.5 if i >= from_index else 0)
                tar.addfile(info, io.BytesIO(item[ext]))
    return str(path)


def webdataset_samples(urls) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "__local_path__"}
            for s in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())]


def test_plain_shards_read_as_webdataset_reads_them(tmp_path):
    urls = [write_plain(tmp_path / "a.tar", samples(7)), write_plain(tmp_path / "b.tar", samples(3))]
    ours = list(read_tar_samples(urls))
    assert ours == webdataset_samples(urls)
    assert [s["__key__"] for s in ours][:2] == ["sample_0000", "sample_0001"] and len(ours) == 10


def test_pax_headers_midway_hand_the_rest_to_tarfile(tmp_path):
    items = samples(6)
    url = write_with_pax(tmp_path / "pax.tar", items, from_index=3)
    got = list(read_tar_samples([url]))
    assert got == webdataset_samples([url])
    assert [s["jpg"] for s in got] == [s["jpg"] for s in items]


def test_long_names_read_through_tarfile(tmp_path):
    items = samples(2, long_names=True)
    url = write_plain(tmp_path / "long.tar", items)
    assert [s["__key__"] for s in read_tar_samples([url])] == [s["__key__"] for s in items]


def test_pipeline_stage_takes_webdataset_shard_lists(tmp_path):
    urls = [write_plain(tmp_path / "a.tar", samples(4))]
    keys = [s["__key__"] for s in wds.DataPipeline(wds.SimpleShardList(urls), tar_samples)]
    assert keys == [f"sample_{i:04d}" for i in range(4)]


def test_truncated_shard_names_the_file(tmp_path):
    url = write_plain(tmp_path / "cut.tar", samples(5))
    data = open(url, "rb").read()
    open(url, "wb").write(data[: len(data) // 2 + 100])
    with pytest.raises(ShardReadError, match=r"cut\.tar.*truncated.*data verify"):
        list(read_tar_samples([url]))


def test_damaged_header_names_the_file(tmp_path):
    url = write_plain(tmp_path / "bad.tar", samples(3))
    data = bytearray(open(url, "rb").read())
    data[512 * 2 + 10] ^= 0xFF  # inside the second member's header (after the first member's one data block)
    open(url, "wb").write(bytes(data))
    with pytest.raises(ShardReadError, match=r"bad\.tar"):
        list(read_tar_samples([url]))


def test_decode_rgb_matches_pil_and_falls_back_for_cmyk():
    rgb = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    data = encode_jpeg(rgb, quality=90)
    with Image.open(io.BytesIO(data)) as img:
        assert np.array_equal(decode_rgb(data), np.asarray(img.convert("RGB")))
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    assert decode_rgb(buf.getvalue()).shape == (24, 32, 3)
    with pytest.raises(Exception):
        decode_rgb(data[: len(data) // 3])
