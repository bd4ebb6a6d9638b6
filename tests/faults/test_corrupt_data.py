"""Corrupt and truncated image data (issue 14): never a crash, one line naming file and image.

Documented rule (docs/input_format.md, general.max_unreadable_fraction): an unreadable image
(a compressed chunk whose sizes do not add up, a chunk HDF5 cannot decode, a reader process
that died on it) is skipped with a warning naming it, counted in the spot-finding summary
and flagged in /entry/image/unreadable; the run stops with exit 1 when unreadable images are
more than half of the selection (or all of it, e.g. the one image of ``-s 12 -e 12``). A
truncated data file is refused before any work (exit 2).

Corruption is injected on disk at the chunk's byte offset (``get_chunk_info``). Parts that
would crash the interpreter if the validation regressed run in a subprocess.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from jfx.cli import process_main
from jfx.io.errors import InputError, ProcessingError
from jfx.io.frame_reader import check_bitshuffle_chunk
from jfx.io.jfjoch_writer import write_jungfraujoch
from jfx.io.nxmx import open_master
from jfx.pipeline.spotfind_stage import check_unreadable
from tests.cli.conftest import SHAPE, make_master, numpy_stats
from tests.io.conftest import NX, NY, random_frames, small_geometry


@pytest.fixture
def make_file(tmp_path):
    """make_file(codec, n, images_per_file, frames) → (legacy master of NY×NX int32
    frames, the frames written)."""

    def _make(*, codec="bslz4", n=4, images_per_file=4, frames=None):
        fr = random_frames("int32", n) if frames is None else frames
        master = write_jungfraujoch(tmp_path / "run", iter(fr), n_images=n,
                                    geometry=small_geometry(), dtype="int32", codec=codec,
                                    images_per_file=images_per_file)
        return Path(master), fr

    return _make


@pytest.fixture(autouse=True)
def _no_global_compilation_cache(monkeypatch):
    """In-process CLI runs must not switch on JAX's persistent cache for the session."""
    import jfx.cli

    monkeypatch.setattr(jfx.cli, "enable_compilation_cache", lambda: None)


ROOT = Path(__file__).resolve().parents[2]


def _chunk(path: Path, image: int):
    with h5py.File(path, "r") as f:
        return f["entry/data/data"].id.get_chunk_info_by_coord((image, 0, 0))


def _poke(path: Path, image: int, offset: int, data: bytes) -> None:
    """Overwrite bytes ``offset…`` of image ``image``'s stored chunk in ``path``."""
    info = _chunk(path, image)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + offset)
        fh.write(data)


def _flip_block0_size(path: Path, image: int) -> None:
    """High byte of the first block's compressed size: the decoder then walks GBs away."""
    _poke(path, image, 12, b"\xff")


def _master(tmp_path: Path, n: int = 6, **kw):
    """Tiny legacy rotation master, 3 images per data file; (master, frames, mask)."""
    master, frames, mask, _ = make_master(tmp_path, n_images=n, images_per_file=3, **kw)
    return master, frames, mask


def _data_file(master: Path, k: int) -> Path:
    return master.parent / master.name.replace("_master.h5", f"_data_{k:06d}.h5")


def _run(tmp_path, capsys, argv, name="o"):
    rc = process_main([*argv, "-o", str(tmp_path / "out" / name)])
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------ the chunk validation
@pytest.mark.parametrize("codec", ["bslz4", "bszstd"])
def test_chunk_check_accepts_written_chunks_and_names_each_bad_field(make_file, codec):
    master, _ = make_file(codec=codec, n=2, images_per_file=2)
    with h5py.File(master.parent / "run_data_000001.h5", "r") as f:
        ds = f["entry/data/data"]
        raw = ds.id.read_direct_chunk((0, 0, 0))[1]
    n_bytes, zstd = NY * NX * 4, codec == "bszstd"
    assert check_bitshuffle_chunk(raw, n_bytes, 4, zstd) is None
    total, block = struct.unpack_from(">QI", raw)
    assert total == n_bytes and block == 8192  # 20480 bytes: blocks of 8192, 8192, 4096
    sizes, pos = [], 12
    while pos < len(raw):
        c = struct.unpack_from(">I", raw, pos)[0]
        sizes.append(c)
        pos += 4 + c
    assert pos == len(raw) and len(sizes) == 3

    def with_bytes(at, b):
        return raw[:at] + b + raw[at + len(b):]

    cases = [
        (raw[:8], "shorter than its 12-byte header"),
        (with_bytes(0, struct.pack(">Q", total + 4)), f"header says {total + 4} uncompressed"),
        (with_bytes(8, struct.pack(">I", 100)), "block size 100 bytes is not a positive multiple"),
        (with_bytes(8, struct.pack(">I", 0)), "not a positive multiple of 32"),
        (with_bytes(12, b"\xff"), "block 0 of 3: block size"),
        (with_bytes(12, struct.pack(">I", sizes[0] + 1)), "block size"),
        (raw[:-1], "exceeds the"),
        (raw + b"\0", "end at byte"),
        (with_bytes(8, struct.pack(">I", 4096)), "of 5"),  # 5 blocks expected, 3 stored
    ]
    for bad, needle in cases:
        msg = check_bitshuffle_chunk(bad, n_bytes, 4, zstd)
        assert msg is not None and msg.startswith("corrupt compressed chunk: ") and needle in msg, \
            (needle, msg)
    if zstd:  # the zstd frame header of block 0 (magic number)
        msg = check_bitshuffle_chunk(with_bytes(16, b"\0\0\0\0"), n_bytes, 4, zstd)
        assert "is not a zstd frame" in msg


def test_chunk_check_counts_unblocked_tail_elements():
    """size mod 8 elements are stored raw after the blocks (bitshuffle's blocked layout)."""
    n_el, elem = 8 * 5 + 3, 2  # 43 uint16: one block of 40 elements, 3 stored raw
    payload = bytes(7)
    raw = struct.pack(">QI", n_el * elem, 8192) + struct.pack(">I", len(payload)) + payload \
        + bytes(3 * elem)
    assert check_bitshuffle_chunk(raw, n_el * elem, elem) is None
    assert "end at byte" in check_bitshuffle_chunk(raw + b"\0", n_el * elem, elem)
    assert "exceeds" in check_bitshuffle_chunk(raw[:-7], n_el * elem, elem)


def test_unreadable_rule():
    check_unreadable(0, 1, 0.5, "")
    check_unreadable(3, 6, 0.5, "m")  # half: skipped
    with pytest.raises(ProcessingError, match="4 of 6 selected images are unreadable "
                       r"\(more than general.max_unreadable_fraction=0.5 allows\); the first: m"):
        check_unreadable(4, 6, 0.5, "m")
    with pytest.raises(ProcessingError, match="^the selected image is unreadable: m$"):
        check_unreadable(1, 1, 1.0, "m")
    with pytest.raises(ProcessingError, match=r"6 of 6 .*\(all of them\)"):
        check_unreadable(6, 6, 1.0, "m")
    with pytest.raises(ProcessingError, match="1 of 100"):
        check_unreadable(1, 100, 0.0, "m")


@pytest.mark.parametrize("dtype", ["int32", "uint16"])
@pytest.mark.parametrize("codec", ["bslz4", "bszstd"])
def test_validated_reads_equal_the_written_frames(tmp_path, dtype, codec, monkeypatch):
    """Whole-frame chunks that pass the check are decoded straight from the raw chunk
    (hdf5plugin's bitshuffle through ctypes); the HDF5 filter path (no such library, or
    chunks that are not whole frames) gives the same frames."""
    from jfx.io import frame_reader

    fr = random_frames(dtype, 5)
    master = write_jungfraujoch(tmp_path / "run", iter(fr), n_images=5,
                                geometry=small_geometry(), dtype=dtype, codec=codec,
                                images_per_file=5)
    with open_master(master) as m:
        assert frame_reader._bshuf_decoder() is not None
        np.testing.assert_array_equal(m.read_frames([4, 0, 1, 2, 3]), fr[[4, 0, 1, 2, 3]])
    monkeypatch.setattr(frame_reader, "_DECODER", [None])  # HDF5 decodes after the check
    with open_master(master) as m:
        np.testing.assert_array_equal(m.read_frames(range(5)), fr)
    monkeypatch.undo()
    data = tmp_path / "run_data_000001.h5"  # tiled chunks: each tile checked, HDF5 decodes
    with h5py.File(data, "r+") as f:
        del f["entry/data/data"]
        f.create_dataset("entry/data/data", data=fr, chunks=(1, NY // 2, NX),
                         **dict(hdf5plugin.Bitshuffle(cname=codec[2:])))
    with open_master(master) as m:
        np.testing.assert_array_equal(m.read_frames(range(5)), fr)
    with h5py.File(data, "r") as f:
        info = f["entry/data/data"].id.get_chunk_info_by_coord((3, NY // 2, 0))
    with open(data, "r+b") as fh:
        fh.seek(info.byte_offset + 12)
        fh.write(b"\xff")
    with open_master(master) as m, pytest.raises(
            InputError, match=r"image 3 \(file .*run_data_000001.h5\): corrupt compressed chunk"):
        m.read_frames([2, 3])


# ------------------------------------------------------------ no crash, in a subprocess
_READ_SCRIPT = textwrap.dedent("""
    import sys, h5py, hdf5plugin
    from jfx.io.errors import InputError
    from jfx.io.nxmx import open_master
    master, image = sys.argv[1], int(sys.argv[2])
    with open_master(master) as m:
        try:
            m.read_frames([image])
            print("read: decoded")
        except InputError as e:
            print("read:", e)
        for workers in (0, 1, 2):
            got = [c.tolist() for c, _ in m.iter_chunks(chunk_size=2, workers=workers,
                                                        skip_unreadable=True)]
            print("chunks", workers, got, sorted(m.unreadable))
""")


def _read_in_subprocess(master: Path, image: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", _READ_SCRIPT, str(master), str(image)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_corrupt_block_size_is_reported_not_a_segfault(tmp_path):
    master, _, _ = _master(tmp_path)
    data = _data_file(master, 1)
    _flip_block0_size(data, 2)
    r = _read_in_subprocess(master, 2)
    assert r.returncode == 0, (r.returncode, r.stderr)  # was -11 (SIGSEGV) before the check
    out = r.stdout.splitlines()
    size0 = struct.unpack(">I", _raw(data, 2)[12:16])[0]
    assert size0 >= 0xff000000
    n = _chunk(data, 2).size
    assert out[0] == (f"read: corrupt or unreadable data in image 2 (file {data}): corrupt "
                      f"compressed chunk: block 0 of 1: block size {size0} bytes exceeds the "
                      f"{n - 16} bytes left in the {n}-byte chunk")
    for w in (0, 1, 2):
        assert f"chunks {w} [[0, 1], [2, 3], [4, 5]] [2]" in out
    assert "Traceback" not in r.stderr


def _raw(path: Path, image: int) -> bytes:
    with h5py.File(path, "r") as f:
        return f["entry/data/data"].id.read_direct_chunk((image, 0, 0))[1]


def test_in_block_corruption_does_not_crash(make_file, tmp_path):
    """Bytes flipped inside LZ4 blocks, every size field intact: the block decoder is
    bounded by the stored size (LZ4_decompress_safe in hdf5plugin's bitshuffle), so the
    result is an error (image unreadable) or wrong pixel values, never a crash."""
    master, _ = make_file(codec="bslz4", n=4, images_per_file=4)
    data = master.parent / "run_data_000001.h5"
    raw = _raw(data, 1)
    sizes, pos = [], 12
    while pos < len(raw):
        sizes.append((pos + 4, struct.unpack_from(">I", raw, pos)[0]))
        pos += 4 + sizes[-1][1]
    for start, size in sizes:  # garbage in the middle of every block
        mid = start + size // 3
        _poke(data, 1, mid, bytes(range(251, 251 - min(16, size // 3), -1)))
    assert check_bitshuffle_chunk(_raw(data, 1), NY * NX * 4, 4) is None  # sizes intact
    r = _read_in_subprocess(master, 1)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    first = r.stdout.splitlines()[0]
    assert first == "read: decoded" or first.startswith(
        "read: corrupt or unreadable data in image 1 (file ")
    # a plain h5py read of every chunk does not crash either
    code = ("import h5py, hdf5plugin, sys\n"
            "d = h5py.File(sys.argv[1], 'r')['entry/data/data']\n"
            "for i in range(4):\n"
            "    try: d[i]\n"
            "    except OSError as e: print(i, e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, (r.returncode, r.stderr)


# ----------------------------------------------------------------------- jfjoch_process
def test_corrupt_image_alone_stops_with_one_line(tmp_path, capsys):
    master, _, _ = _master(tmp_path)
    _flip_block0_size(_data_file(master, 1), 2)
    rc, err = _run(tmp_path, capsys, [str(master), "-s", "2", "-e", "2", "-X", "None"])
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(
        "jfjoch_process: error: the selected image is unreadable: corrupt or unreadable data "
        f"in image 2 (file {_data_file(master, 1)}): corrupt compressed chunk: block 0 of 1: "
        "block size ")
    assert "exceeds the" in lines[0]
    assert not (tmp_path / "out" / "o_process.h5").exists()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_corrupt_image_is_skipped_with_a_warning(tmp_path, capsys, threads):
    master, frames, mask = _master(tmp_path)
    data2 = _data_file(master, 2)
    _flip_block0_size(data2, 1)  # image 4
    rc, err = _run(tmp_path, capsys, [str(master), "-X", "None", "-N", threads])
    assert rc == 0, err
    assert "Traceback" not in err
    warn = [ln for ln in err.splitlines() if "warning:" in ln]
    assert len(warn) == 1
    assert warn[0].startswith(
        "jfjoch_process: warning: skipped unreadable image 4: corrupt or unreadable data in "
        f"image 4 (file {data2}): corrupt compressed chunk: block 0 of 1: block size ")
    assert "1 unreadable image skipped" in err
    with h5py.File(tmp_path / "out" / "o_process.h5", "r") as f:
        img = f["entry/image"]
        np.testing.assert_array_equal(img["unreadable"][()], [0, 0, 0, 0, 1, 0])
        assert img["n_masked"][4] == SHAPE[0] * SHAPE[1]  # processed as fully masked
        assert np.isnan(img["mean"][4]) and img["max"][4] == 0
        good = [0, 1, 2, 3, 5]
        mx, mean, n_masked, _ = numpy_stats(frames[good], mask)
        np.testing.assert_array_equal(img["max"][good], mx)
        np.testing.assert_allclose(img["mean"][good], mean, rtol=1e-6)
        np.testing.assert_array_equal(img["n_masked"][good], n_masked)


def test_mostly_unreadable_run_stops(tmp_path, capsys):
    master, _, _ = _master(tmp_path)
    for k, j in ((1, 0), (1, 1), (2, 0), (2, 2)):  # images 0, 1, 3, 5
        _flip_block0_size(_data_file(master, k), j)
    rc, err = _run(tmp_path, capsys, [str(master), "-X", "None"])
    assert rc == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("jfjoch_process: error: 4 of 6 selected images are unreadable (more "
                           "than general.max_unreadable_fraction=0.5 allows); the first: corrupt"
                           " or unreadable data in image 0 (file ")
    assert "Traceback" not in err
    # a stricter or laxer rule by config key
    rc, err = _run(tmp_path, capsys, [str(master), "-X", "None",
                                      "general.max_unreadable_fraction=0.7"], "lax")
    assert rc == 0, err
    assert "4 unreadable images skipped" in err


# ------------------------------------------------------------ reader process that dies
def _kill_reader(name: str) -> int:
    for p in multiprocessing.active_children():
        if p.name == name:
            os.kill(p.pid, signal.SIGSEGV)
            p.join(timeout=10)
            return p.exitcode
    raise AssertionError(f"no reader process {name}")


def test_dead_reader_process_names_its_images_and_the_rest_is_read(make_file):
    fr = random_frames("int32", 6)
    master, _ = make_file(n=6, images_per_file=3, frames=fr)
    with open_master(master) as m:
        it = m.iter_chunks(chunk_size=1, workers=2, prefetch=2, skip_unreadable=True)
        c, f = next(it)  # image 0 from reader 0; reader 1 holds image 1 (or reads it)
        got = {int(c[0]): f}
        assert _kill_reader("jfx-reader-1") == -signal.SIGSEGV
        got.update((int(c[0]), f) for c, f in it)
        assert sorted(got) == list(range(6))
        (bad, msg), = m.unreadable.items()  # the image reader 1 was reading when it died
        assert bad in (1, 3)
        data = master.parent / f"run_data_00000{1 + bad // 3}.h5"
        assert msg == (f"reader process 1 for {master} died (signal 11 (SIGSEGV)) while "
                       f"reading image {bad} (file {data})")
        assert np.all(got[bad] == np.iinfo(np.int32).min)  # delivered fully invalid
        for i in set(range(6)) - {bad}:  # a new reader 1 delivered the rest
            np.testing.assert_array_equal(got[i][0], fr[i])
        # without skipping, the same death is one InputError naming the images
        it = m.iter_chunks(chunk_size=1, workers=2, prefetch=2)
        next(it)
        _kill_reader("jfx-reader-1")
        with pytest.raises(InputError, match=r"reader process 1 .* died \(signal 11 \(SIGSEGV\)\) "
                           r"while reading image (1|3) \(file .*run_data_00000[12].h5\)$"):
            list(it)


# ------------------------------------------------------------------------ truncated files
def test_truncated_data_file_is_one_line_before_work(tmp_path, capsys):
    master, _, _ = _master(tmp_path)
    data2 = _data_file(master, 2)
    size = data2.stat().st_size
    os.truncate(data2, size - 500)
    rc, err = _run(tmp_path, capsys, [str(master), "-X", "None"])
    assert rc == 2, err
    assert err.strip() == (
        f"jfjoch_process: error: data file {data2} is truncated: the file has {size - 500} "
        f"bytes, its HDF5 header records {size} (500 bytes missing, an interrupted copy or "
        "write?); HDF5 cannot open it, copy the complete file")
    with pytest.raises(InputError, match=f"data file {data2} is truncated"):
        open_master(master)
