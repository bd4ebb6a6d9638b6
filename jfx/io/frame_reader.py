"""Frame reading shared by :mod:`jfx.io.nxmx` and its reader processes.

* :func:`check_bitshuffle_chunk` — validates a raw bitshuffle-LZ4/zstd chunk before anything
  decodes it (the bitshuffle filter trusts the chunk's size fields: a flipped byte made it
  read far outside the chunk, a segmentation fault).
* :class:`FrameReader` — reads frames described by a plain-dict spec into caller buffers,
  checking chunks first; unreadable images raise or are marked.
* :func:`reader_process` / :func:`reader_process_main` — the reader processes of
  :func:`jfx.io.nxmx.frames.iter_chunks`.

This module imports only the standard library, h5py, hdf5plugin and numpy: reader
processes load it by file path, without importing the jfx package (nor JAX).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import threading
from pathlib import Path

import h5py
import hdf5plugin  # registers bitshuffle/LZ4/zstd filters with HDF5
import numpy as np

# Well-known HDF5 filter ids → names (used in error messages).
FILTER_NAMES = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    307: "bzip2",
    32000: "lzf",
    32001: "blosc",
    32004: "lz4",
    32008: "bitshuffle",
    32013: "zfp",
    32015: "zstd",
    32017: "sz",
    32026: "blosc2",
}

BITSHUFFLE_ID = 32008


def dataset_filters(dset: h5py.Dataset) -> list[tuple[int, str, tuple[int, ...]]]:
    """The filter pipeline of ``dset``: a list of (filter id, name, client values)."""
    plist = dset.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(i)
        nm = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        out.append((int(code), FILTER_NAMES.get(int(code), nm or "unknown"), tuple(values)))
    return out


# ----------------------------------------------------------------------------------------
# Frame reading shared by jfx.io.nxmx and its reader processes.
#
# This part only needs h5py/numpy: reader processes load this file by path (without
# importing the jfx package, i.e. without JAX), which halves their start-up time. The
# reading specification is therefore a plain dict:
#   {"vds": bool, "segments": [(file, dataset, first image, count), ...],
#    "shape": (ny, nx), "dtype": numpy dtype str, "vds_files": [(image indices, file), ...]}


def one_line(e: BaseException) -> str:
    """An exception's message on one line (type name if empty)."""
    msg = " ".join(str(e).split())
    return msg or type(e).__name__


class FrameReadError(Exception):
    """A frame could not be read/decoded; the message names the image and the file."""


# ----------------------------------------------------------------------------------------
# Validation of bitshuffle-LZ4 / bitshuffle-zstd chunks before they reach the decoder.
#
# The bitshuffle HDF5 filter (filter 32008, compression 2 = LZ4, 3 = zstd) stores a chunk as
#   8-byte big-endian uncompressed size | 4-byte big-endian block size (bytes)
#   | per block: 4-byte big-endian compressed size, then that many bytes
#   | the last (size mod 8) elements uncompressed.
# The blocks hold block-size bytes each, then one block of the remaining whole groups of 8
# elements. The filter trusts every size field: it walks from block to block by the stored
# sizes without comparing them with the chunk length, so a flipped size byte makes it read
# far outside the chunk (a segmentation fault). Checked here first, the sizes must add up
# exactly to the chunk length; inside a block the decoders are bounded by the stored size
# (LZ4_decompress_safe, ZSTD_decompress), so a chunk that passes cannot crash them.

_BSHUF_HEADER = struct.Struct(">QI")
_U32_BE = struct.Struct(">I")
_BSHUF_MULT = 8  # bitshuffle transposes groups of 8 elements
_ZSTD_MAGIC = 0xFD2FB528


def _block_bound(n: int) -> int:
    """Upper bound (bytes) of one compressed block of ``n`` bytes (LZ4_compressBound is
    n + n/255 + 16, ZSTD_compressBound at most n + n/256 + 64)."""
    return n + n // 255 + 128


def _zstd_frame_problem(raw, pos: int, c: int, n_out: int) -> str | None:
    """What is wrong with the zstd frame header at ``raw[pos:pos + c]`` (None: fine)."""
    if c < 6 or int.from_bytes(raw[pos:pos + 4], "little") != _ZSTD_MAGIC:
        return "is not a zstd frame (bad magic number)"
    fhd = raw[pos + 4]
    if fhd & 0x08:
        return "has a zstd frame header with the reserved bit set"
    single = (fhd >> 5) & 1
    q = pos + 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    if fcs and q + fcs <= pos + c:
        size = int.from_bytes(raw[q:q + fcs], "little") + (256 if fcs == 2 else 0)
        if size != n_out:
            return f"decompresses to {size} bytes by its zstd frame header, expected {n_out}"
    return None


def check_bitshuffle_chunk(raw, n_bytes: int, elem_size: int, zstd: bool = False) -> str | None:
    """What is wrong with a raw bitshuffle-LZ4 (``zstd``: bitshuffle-zstd) chunk, or None.

    Args:
        raw: the chunk as stored (``bytes``, from ``DatasetID.read_direct_chunk``).
        n_bytes: the chunk's uncompressed size (elements of the chunk shape × item size).
        elem_size: bytes per element (the filter's element size).
        zstd: blocks are zstd frames (their magic number and content size are checked too).
    Returns:
        None when every size field is consistent with ``len(raw)``; else one line starting
        "corrupt compressed chunk: ".
    """
    n = len(raw)
    bad = "corrupt compressed chunk: "
    if n < _BSHUF_HEADER.size:
        return bad + f"{n} bytes, shorter than its {_BSHUF_HEADER.size}-byte header"
    total, block_bytes = _BSHUF_HEADER.unpack_from(raw)
    if total != n_bytes:
        return bad + f"header says {total} uncompressed bytes, the chunk holds {n_bytes}"
    if block_bytes == 0 or block_bytes % (elem_size * _BSHUF_MULT):
        return bad + (f"block size {block_bytes} bytes is not a positive multiple of "
                      f"{elem_size * _BSHUF_MULT}")
    size, bs = total // elem_size, block_bytes // elem_size
    n_full, rest = divmod(size, bs)
    last = rest - rest % _BSHUF_MULT
    n_blocks = n_full + (1 if last else 0)
    end = n - (size % _BSHUF_MULT) * elem_size  # the unblocked elements are stored raw
    pos = _BSHUF_HEADER.size
    unpack = _U32_BE.unpack_from
    out_bytes = bs * elem_size
    for b in range(n_blocks):
        if b == n_full:
            out_bytes = last * elem_size
        if pos + 4 > end:
            return bad + (f"block {b} of {n_blocks} would start at byte {pos}, beyond the "
                          f"end of the {n}-byte chunk")
        c = unpack(raw, pos)[0]
        pos += 4
        if c == 0 or c > end - pos:
            return bad + (f"block {b} of {n_blocks}: block size {c} bytes exceeds the "
                          f"{end - pos} bytes left in the {n}-byte chunk")
        if c > _block_bound(out_bytes):
            return bad + (f"block {b} of {n_blocks}: block size {c} bytes exceeds the "
                          f"largest possible {_block_bound(out_bytes)} for {out_bytes} bytes")
        if zstd:
            p = _zstd_frame_problem(raw, pos, c, out_bytes)
            if p:
                return bad + f"block {b} of {n_blocks} {p}"
        pos += c
    if pos != end:
        return bad + (f"its {n_blocks} blocks of {block_bytes} bytes (block size in the header) "
                      f"end at byte {pos}, the chunk has {n - end} bytes of blocks")
    return None


_DECODER: list = []  # [None] or [(lz4 function, zstd function)] once probed


def _bshuf_decoder():
    """``(bshuf_decompress_lz4, bshuf_decompress_zstd)`` of hdf5plugin's bitshuffle
    library through ctypes, or None when unavailable or when it fails a self-test (a chunk
    written by the HDF5 filter into an in-memory file must decode to the data written)."""
    if _DECODER:
        return _DECODER[0]
    _DECODER.append(None)
    try:
        import ctypes

        lib = ctypes.CDLL(hdf5plugin.get_config().registered_filters["bshuf"])
        fns = (lib.bshuf_decompress_lz4, lib.bshuf_decompress_zstd)
        for fn in fns:
            fn.restype = ctypes.c_int64
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                           ctypes.c_size_t, ctypes.c_size_t]
        data = (np.arange(3 * 1500, dtype=np.int32).reshape(3, 1500) * 7919) % 50021
        with h5py.File(f"jfx-bshuf-selftest-{os.getpid()}.h5", "w", driver="core",
                       backing_store=False) as f:
            for zstd in (False, True):
                ds = f.create_dataset(f"d{int(zstd)}", data=data, chunks=data.shape,
                                      **hdf5plugin.Bitshuffle(cname="zstd" if zstd else "lz4"))
                raw = ds.id.read_direct_chunk((0, 0))[1]
                got = np.empty_like(data)
                _DECODER[0] = fns
                if _bshuf_decode(raw, got, 4, zstd) is not None or not np.array_equal(got, data):
                    _DECODER[0] = None
                    return None
    except Exception:  # noqa: BLE001 - no usable library: HDF5 decodes
        _DECODER[0] = None
    return _DECODER[0]


def _bshuf_decode(raw: bytes, dest: np.ndarray, elem: int, zstd: bool) -> str | None:
    """Decode a chunk that passed :func:`check_bitshuffle_chunk` straight into the
    C-contiguous ``dest`` (no HDF5 buffer, no second read). None, or what went wrong."""
    buf = np.frombuffer(raw, np.uint8)
    block = _BSHUF_HEADER.unpack_from(raw)[1] // elem
    fn = _DECODER[0][1 if zstd else 0]
    used = fn(buf.ctypes.data + _BSHUF_HEADER.size, dest.ctypes.data, dest.nbytes // elem,
              elem, block)
    if used != len(raw) - _BSHUF_HEADER.size:
        return (f"corrupt compressed chunk: {'zstd' if zstd else 'LZ4'} decoding failed "
                f"(bitshuffle error {used})" if used < 0 else
                f"corrupt compressed chunk: the decoder used {used} of "
                f"{len(raw) - _BSHUF_HEADER.size} bytes")
    return None


def _chunk_plan(ds: h5py.Dataset) -> tuple | None:
    """(chunk shape, uncompressed chunk bytes, element size, zstd) for a dataset whose
    only filter is bitshuffle with LZ4 or zstd; None otherwise (nothing to validate)."""
    if ds.chunks is None:
        return None
    try:
        filters = dataset_filters(ds)
    except Exception:  # noqa: BLE001 - no plist: nothing to validate
        return None
    if len(filters) != 1 or filters[0][0] != BITSHUFFLE_ID:
        return None
    values = filters[0][2]
    comp = int(values[4]) if len(values) > 4 else 0
    if comp not in (2, 3):
        return None
    elem = int(values[2]) if len(values) > 2 and values[2] else ds.dtype.itemsize
    shape = tuple(int(c) for c in ds.chunks)
    return shape, int(np.prod(shape)) * ds.dtype.itemsize, elem, comp == 3


def error_fill(dtype) -> int:
    """The invalid-pixel marker of an integer pixel type (type minimum if signed, maximum
    if unsigned): unreadable frames are filled with it (fully masked)."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min if np.dtype(dtype).kind == "i" else info.max)


class FrameReader:
    """Reads frames described by a spec dict (see above) into caller-provided buffers.

    Files are opened lazily and kept open; ``read_into`` merges consecutive images of the
    same dataset into one hyperslab read (one HDF5 call, no intermediate copies). Chunks of
    bitshuffle-LZ4/zstd datasets are validated (:func:`check_bitshuffle_chunk`) before
    anything decodes them; a validated whole-frame chunk is decoded from the raw bytes by
    :func:`_bshuf_decode` (when :func:`_bshuf_decoder` passed its self-test), the rest by
    HDF5.
    """

    def __init__(self, spec: dict):
        self.spec = spec
        self.segments = [tuple(s) for s in spec["segments"]]
        self.shape = tuple(spec["shape"])
        self._starts = [s[2] for s in self.segments]
        self._files: dict[str, h5py.File] = {}
        self._dsets: list[h5py.Dataset | None] = [None] * len(self.segments)
        self._plans: dict[tuple[str, str], tuple | None] = {}
        self._vds_maps: dict[int, dict[int, tuple[str, str, int]]] = {}
        self._lock = threading.Lock()

    def _file(self, fname: str) -> h5py.File:
        f = self._files.get(fname)
        if f is None:
            f = h5py.File(fname, "r")
            self._files[fname] = f
        return f

    def _dataset(self, k: int) -> h5py.Dataset:
        ds = self._dsets[k]
        if ds is not None:
            return ds
        with self._lock:
            fname, dpath = self.segments[k][0], self.segments[k][1]
            f = self._file(fname)
            if self.spec.get("vds"):
                # resolve relative virtual-source names against the master's directory
                dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                dapl.set_virtual_prefix(os.fsencode(str(Path(fname).parent)) + b"/")
                ds = h5py.Dataset(h5py.h5d.open(f.id, dpath.encode(), dapl=dapl))
            else:
                ds = f[dpath]
            self._dsets[k] = ds
            return ds

    def _vds_map(self, k: int) -> dict[int, tuple[str, str, int]]:
        """Image → (source file, source dataset, index there) of the virtual dataset of
        segment ``k`` (images whose mapping is not a plain list of whole frames are left
        out: they are read unchecked)."""
        m = self._vds_maps.get(k)
        if m is not None:
            return m
        m = {}
        ds = self._dataset(k)
        base = Path(self.segments[k][0]).parent
        for vs in ds.virtual_sources():
            try:
                v_img = _selected_images(vs.vspace)
                s_img = _selected_images(vs.src_space)
            except Exception:  # noqa: BLE001, S112 - irregular selections: read unchecked
                continue
            if not v_img or len(v_img) != len(s_img):
                continue
            fname = (self.segments[k][0] if vs.file_name == "."
                     else str(Path(vs.file_name) if Path(vs.file_name).is_absolute()
                              else base / vs.file_name))
            for v, s in zip(v_img, s_img):
                m[v] = (fname, vs.dset_name, s)
        self._vds_maps[k] = m
        return m

    def _stored(self, i: int, k: int) -> tuple[h5py.Dataset, int] | None:
        """(dataset that stores image ``i``, its index there): the segment's dataset, or
        the virtual dataset's source; None when unknown."""
        if not self.spec.get("vds"):
            return self._dataset(k), i - self.segments[k][2]
        hit = self._vds_map(k).get(i)
        if hit is None:
            return None
        fname, dpath, s = hit
        ds = self._file(fname).get(dpath)
        return (ds, s) if isinstance(ds, h5py.Dataset) else None

    def check_image(self, i: int, k: int) -> tuple[str | None, tuple | None]:
        """Validate the stored chunks of image ``i`` (segment ``k``).

        Returns:
            (problem, direct): problem: what is wrong (None: fine, or not a
            bitshuffle-LZ4/zstd dataset); direct: (raw chunk, element size, zstd, dtype) when
            the image is one validated whole-frame chunk that :func:`_bshuf_decode` may
            decode, else None.
        """
        try:
            where = self._stored(i, k)
        except Exception:  # noqa: BLE001 - reported by the read itself
            return None, None
        if where is None:
            return None, None
        ds, s = where
        key = (ds.file.filename, ds.name)
        if key not in self._plans:
            self._plans[key] = _chunk_plan(ds)
        plan = self._plans[key]
        if plan is None or ds.ndim != 3:
            return None, None
        (c0, cy, cx), n_bytes, elem, zstd = plan
        ny, nx = ds.shape[1:]
        whole = c0 == 1 and (cy, cx) == (ny, nx) == self.shape
        for y in range(0, ny, cy):
            for x in range(0, nx, cx):
                try:
                    mask, raw = ds.id.read_direct_chunk((s - s % c0, y, x))
                except Exception:  # noqa: BLE001 - unallocated chunk: HDF5 reads fill values
                    whole = False
                    continue
                if mask & 1:  # bitshuffle skipped for this chunk: stored as is
                    whole = False
                    p = (None if len(raw) == n_bytes else
                         f"corrupt chunk: {len(raw)} bytes stored unfiltered, expected {n_bytes}")
                else:
                    p = check_bitshuffle_chunk(raw, n_bytes, elem, zstd)
                if p:
                    return p, None
        return None, ((raw, elem, zstd, ds.dtype) if whole else None)

    def file_of(self, i: int) -> str:
        """Name of the file holding image ``i`` (for messages)."""
        for idx, fname in self.spec.get("vds_files", ()):
            if i in idx:
                return fname
        k = bisect.bisect_right(self._starts, i) - 1
        return self.segments[max(k, 0)][0]

    def _message(self, i: int, detail: str) -> str:
        return f"corrupt or unreadable data in image {i} (file {self.file_of(i)}): {detail}"

    def read_into(self, out: np.ndarray, indices, bad: dict[int, str] | None = None) -> None:
        """Read images ``indices`` into ``out`` (len(indices), ny, nx), native dtype.

        Args:
            bad: None: an unreadable image raises. A dict: an unreadable image is filled
                with :func:`error_fill` (every pixel invalid) and ``bad[image]`` set to the
                message; the other images are read.
        Raises:
            FrameReadError: "corrupt or unreadable data in image N (file F): detail" (the
                first unreadable image; only with ``bad=None``), or a data file that cannot
                be opened.
        """
        n = len(indices)
        j = 0
        while j < n:
            i0 = int(indices[j])
            k = bisect.bisect_right(self._starts, i0) - 1
            _, _, start, count = self.segments[k]
            m = 1  # extend over consecutive images in the same dataset
            while j + m < n and int(indices[j + m]) == i0 + m and i0 + m < start + count:
                m += 1
            problems, hdf5 = {}, np.ones(m, bool)
            for q in range(m):
                p, direct = self.check_image(i0 + q, k)
                if p is None and direct is not None and _bshuf_decoder() is not None \
                        and direct[3] == out.dtype and out[j + q].flags.c_contiguous:
                    p = _bshuf_decode(direct[0], out[j + q], direct[1], direct[2])
                    hdf5[q] = False
                if p:
                    if bad is None:
                        raise FrameReadError(self._message(i0 + q, p))
                    problems[i0 + q] = p
            q = 0
            while q < m:  # HDF5 reads the runs of the other images
                if i0 + q in problems:
                    out[j + q] = error_fill(out.dtype)
                    bad[i0 + q] = self._message(i0 + q, problems[i0 + q])
                if i0 + q in problems or not hdf5[q]:
                    q += 1
                    continue
                r = q
                while r < m and i0 + r not in problems and hdf5[r]:
                    r += 1
                self._read_run(out[j + q:j + r], k, i0 + q, r - q, bad)
                q = r
            j += m

    def _read_run(self, dest: np.ndarray, k: int, i0: int, m: int,
                  bad: dict[int, str] | None) -> None:
        """HDF5 read of images ``i0 .. i0 + m - 1`` of segment ``k`` into ``dest``."""
        ny, nx = self.shape
        start = self.segments[k][2]
        try:
            ds = self._dataset(k)
        except Exception as e:  # noqa: BLE001 - the file itself is unusable
            raise FrameReadError(f"cannot read image {i0} from {self.segments[k][0]}: "
                                 f"{one_line(e)}") from None
        try:
            fspace = ds.id.get_space()
            fspace.select_hyperslab((i0 - start, 0, 0), (m, ny, nx))
            mspace = h5py.h5s.create_simple((m, ny, nx))
            if dest.flags.c_contiguous:
                ds.id.read(mspace, fspace, dest)
            else:
                tmp = np.empty((m, ny, nx), dtype=dest.dtype)
                ds.id.read(mspace, fspace, tmp)
                dest[...] = tmp
        except Exception as e:  # noqa: BLE001 - any HDF5/filter failure
            if m > 1:  # locate the bad image(s)
                for q in range(m):
                    self._read_run(dest[q:q + 1], k, i0 + q, 1, bad)
                if bad is not None:
                    return
            if bad is None:
                raise FrameReadError(self._message(i0, one_line(e))) from None
            dest[...] = error_fill(dest.dtype)
            bad[i0] = self._message(i0, one_line(e))

    def close(self) -> None:
        self._dsets = [None] * len(self.segments)
        self._vds_maps.clear()
        for f in self._files.values():
            with contextlib.suppress(Exception):
                f.close()
        self._files.clear()


def _selected_images(space) -> list[int]:
    """Indices along dimension 0 selected by a dataspace selection covering whole frames
    (a regular hyperslab, or all); raises ValueError for anything else."""
    if space.get_select_type() == h5py.h5s.SEL_ALL:
        return list(range(space.shape[0]))
    if space.get_select_type() != h5py.h5s.SEL_HYPERSLABS or not space.is_regular_hyperslab():
        raise ValueError("irregular selection")
    start, stride, count, block = space.get_regular_hyperslab()
    if any(c * b != s for c, b, s in zip(count[1:], block[1:], space.shape[1:])):
        raise ValueError("partial frames")
    out = []
    for c in range(count[0]):
        b0 = start[0] + c * stride[0]
        out.extend(range(b0, b0 + block[0]))
    return out


def reader_process_main(spec, chunks, wid, nworkers, shm_name, n_slots, free_sem, out_q,
                        stop_evt, first=None, mark=False) -> None:
    """Body of reader process ``wid``: reads chunks first, first + nworkers, … (default
    first = wid; in order) into its ring of ``n_slots`` shared-memory slots; ``free_sem``
    counts free slots; posts ("ok", chunk, slot, {image: message} of unreadable images) or
    ("error", chunk, message) on ``out_q``. With ``mark`` an unreadable image is filled with
    the error value and reported in the "ok" message instead of ending the reader."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=shm_name)
    src = FrameReader(spec)
    cmax = max(len(c) for c in chunks)
    buf = np.ndarray((n_slots, cmax) + tuple(spec["shape"]), dtype=spec["dtype"], buffer=shm.buf)
    try:
        for k, c in enumerate(range(wid if first is None else first, len(chunks), nworkers)):
            while not free_sem.acquire(timeout=0.1):
                if stop_evt.is_set():
                    return
            if stop_evt.is_set():
                return
            slot = k % n_slots
            idx = chunks[c]
            bad = {} if mark else None
            try:
                src.read_into(buf[slot, : len(idx)], idx, bad)
            except FrameReadError as e:
                out_q.put(("error", c, str(e)))
                return
            except Exception as e:  # noqa: BLE001
                out_q.put(("error", c, f"reading images {idx[0]}-{idx[-1]} failed: {one_line(e)}"))
                return
            out_q.put(("ok", c, slot, bad or {}))
    finally:
        del buf
        src.close()
        shm.close()


_CHILD_BOOT = (
    "import importlib.util as _u\n"
    "_s = _u.spec_from_file_location('_jfx_frame_reader', _path)\n"
    "_m = _u.module_from_spec(_s)\n"
    "_s.loader.exec_module(_m)\n"
    "_m.reader_process_main(*_args)\n"
)


def reader_process(ctx, name: str, args: tuple):
    """A (not yet started) reader process of context ``ctx`` running
    :func:`reader_process_main` (``args`` must be plain picklable values). The child loads
    this file by path, so it does not import the jfx package (nor JAX)."""
    return ctx.Process(target=exec, args=(_CHILD_BOOT, {"_path": __file__, "_args": args}),
                       name=name, daemon=True)
