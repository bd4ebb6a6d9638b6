"""Small HDF5 / file helpers shared by the readers and writers of :mod:`jfx.io`.

* :func:`atomic_path` — write a file under a temporary name in the destination directory and
  move it into place with :func:`os.replace` only when the writer finished without an
  exception (no half-written outputs).
* :func:`dataset_filters` / :func:`missing_filters` — the HDF5 filter pipeline of a dataset
  and the filters this HDF5 build cannot decode.
* :func:`codec_name` — Jungfraujoch codec name ("bslz4", "bszstd", "none", …) of a dataset.
* :func:`read_str`, :func:`read_scalar`, :func:`attr_str` — tolerant readers for the many
  ways NeXus writers store strings and scalars (fixed/variable length, bytes, (1,) arrays).
* :class:`FrameReader`, :func:`reader_process` — frame reading for :mod:`jfx.io.nxmx` and its
  reader processes (this module imports only h5py/hdf5plugin/numpy so that reader processes
  can load it by path without importing jfx/JAX).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4/zstd filters with HDF5)
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


def new_temp_path(final: str | os.PathLike) -> Path:
    """An empty temporary file for ``final``: :func:`jfx.io.output_set.new_temp_path`
    (pid-tagged, umask mode; stale ones of dead runs removed)."""
    from jfx.io.output_set import new_temp_path as _new_temp_path

    return _new_temp_path(final)


def check_writable(prefix: str | os.PathLike) -> None:
    """Raise :class:`InputError` (one line) when outputs ``<prefix>…`` cannot be written:
    the directory cannot be created (e.g. a regular file in the way) or a file cannot be
    created in it (read-only, no permission, full). Creates the directory; leaves no file."""
    from jfx.io.errors import InputError

    parent = Path(os.fspath(prefix)).parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InputError(f"cannot write outputs under {str(blocker)!r} (-o {os.fspath(prefix)}): "
                         "it is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".jfx-write-test.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise InputError(f"cannot write outputs to {str(parent) or '.'!r} (-o {os.fspath(prefix)}): "
                         f"{e.strerror or type(e).__name__}") from None


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the directory of ``final``; move it there on success.

    The temporary file is created (empty) in the same directory so that
    :func:`os.replace` is an atomic rename on the same file system. If the body raises,
    the temporary file is removed and ``final`` is left untouched.

    Example::

        with atomic_path(out) as tmp:
            with h5py.File(tmp, "w") as f:
                ...
    """
    final = Path(final)
    tmp = new_temp_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def dataset_filters(dset: h5py.Dataset) -> list[tuple[int, str, tuple[int, ...]]]:
    """The filter pipeline of ``dset``: a list of (filter id, name, client values)."""
    plist = dset.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(i)
        nm = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        out.append((int(code), FILTER_NAMES.get(int(code), nm or "unknown"), tuple(values)))
    return out


def missing_filters(dset: h5py.Dataset) -> list[str]:
    """Names (``"<name> (id <n>)"``) of the filters of ``dset`` this HDF5 cannot decode."""
    return [
        f"{name} (id {code})"
        for code, name, _ in dataset_filters(dset)
        if not h5py.h5z.filter_avail(code)
    ]


def codec_name(dset: h5py.Dataset) -> str:
    """Short codec name: "bslz4" / "bszstd" (bitshuffle + LZ4/zstd), "bitshuffle" (no
    compression), "none" (no filter) or the '+'-joined names of other filters."""
    filters = dataset_filters(dset)
    if not filters:
        return "none"
    names = []
    for code, name, values in filters:
        if code == BITSHUFFLE_ID:
            comp = values[4] if len(values) > 4 else 0
            names.append({2: "bslz4", 3: "bszstd"}.get(int(comp), "bitshuffle"))
        else:
            names.append(name)
    return "+".join(names)


def _decode(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace").rstrip("\x00").strip()
    if isinstance(v, np.ndarray):
        if v.size == 0:
            return ""
        return _decode(v.ravel()[0])
    if isinstance(v, np.generic):
        return _decode(v.item())
    return str(v).rstrip("\x00").strip()


def read_str(dset: h5py.Dataset) -> str:
    """A string dataset (fixed/variable length, bytes or str, scalar or (1,))."""
    return _decode(dset[()])


def attr_str(obj, name: str, default: str | None = None) -> str | None:
    """String attribute ``name`` of an HDF5 object, or ``default`` if absent."""
    if name not in obj.attrs:
        return default
    return _decode(obj.attrs[name])


def read_scalar(dset: h5py.Dataset) -> float:
    """First element of a numeric dataset (scalar or (1,)/(1, 1) array) as float."""
    v = np.asarray(dset[()])
    if v.size == 0:
        raise ValueError("empty dataset")
    return float(v.ravel()[0])


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


class FrameReader:
    """Reads frames described by a spec dict (see above) into caller-provided buffers.

    Files are opened lazily and kept open; ``read_into`` merges consecutive images of the
    same dataset into one hyperslab read (one HDF5 call, no intermediate copies).
    """

    def __init__(self, spec: dict):
        self.spec = spec
        self.segments = [tuple(s) for s in spec["segments"]]
        self.shape = tuple(spec["shape"])
        self._starts = [s[2] for s in self.segments]
        self._files: dict[str, h5py.File] = {}
        self._dsets: list[h5py.Dataset | None] = [None] * len(self.segments)
        self._lock = threading.Lock()

    def _dataset(self, k: int) -> h5py.Dataset:
        ds = self._dsets[k]
        if ds is not None:
            return ds
        with self._lock:
            fname, dpath = self.segments[k][0], self.segments[k][1]
            f = self._files.get(fname)
            if f is None:
                f = h5py.File(fname, "r")
                self._files[fname] = f
            if self.spec.get("vds"):
                # resolve relative virtual-source names against the master's directory
                dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                dapl.set_virtual_prefix(os.fsencode(str(Path(fname).parent)) + b"/")
                ds = h5py.Dataset(h5py.h5d.open(f.id, dpath.encode(), dapl=dapl))
            else:
                ds = f[dpath]
            self._dsets[k] = ds
            return ds

    def file_of(self, i: int) -> str:
        """Name of the file holding image ``i`` (for messages)."""
        for idx, fname in self.spec.get("vds_files", ()):
            if i in idx:
                return fname
        k = bisect.bisect_right(self._starts, i) - 1
        return self.segments[max(k, 0)][0]

    def read_into(self, out: np.ndarray, indices) -> None:
        """Read images ``indices`` into ``out`` (len(indices), ny, nx), native dtype.

        Raises:
            FrameReadError: "corrupt or unreadable data in image N (file F): detail".
        """
        ny, nx = self.shape
        n = len(indices)
        j = 0
        while j < n:
            i0 = int(indices[j])
            k = bisect.bisect_right(self._starts, i0) - 1
            _, _, start, count = self.segments[k]
            m = 1  # extend over consecutive images in the same dataset
            while j + m < n and int(indices[j + m]) == i0 + m and i0 + m < start + count:
                m += 1
            try:
                ds = self._dataset(k)
                fspace = ds.id.get_space()
                fspace.select_hyperslab((i0 - start, 0, 0), (m, ny, nx))
                mspace = h5py.h5s.create_simple((m, ny, nx))
                dest = out[j:j + m]
                if dest.flags.c_contiguous:
                    ds.id.read(mspace, fspace, dest)
                else:
                    tmp = np.empty((m, ny, nx), dtype=out.dtype)
                    ds.id.read(mspace, fspace, tmp)
                    dest[...] = tmp
            except Exception as e:  # noqa: BLE001 - any HDF5/filter failure
                if m > 1:  # locate the first bad image for the message
                    for q in range(m):
                        self.read_into(out[j + q:j + q + 1], [i0 + q])
                raise FrameReadError(f"corrupt or unreadable data in image {i0} "
                                     f"(file {self.file_of(i0)}): {one_line(e)}") from None
            j += m

    def close(self) -> None:
        self._dsets = [None] * len(self.segments)
        for f in self._files.values():
            with contextlib.suppress(Exception):
                f.close()
        self._files.clear()


def reader_process_main(spec, chunks, wid, nworkers, shm_name, n_slots, free_sem, out_q,
                        stop_evt) -> None:
    """Body of reader process ``wid``: reads chunks wid, wid + nworkers, … (in order) into
    its ring of ``n_slots`` shared-memory slots; ``free_sem`` counts free slots; posts
    ("ok", chunk, slot) or ("error", chunk, message) on ``out_q``."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=shm_name)
    src = FrameReader(spec)
    cmax = max(len(c) for c in chunks)
    buf = np.ndarray((n_slots, cmax) + tuple(spec["shape"]), dtype=spec["dtype"], buffer=shm.buf)
    try:
        for k, c in enumerate(range(wid, len(chunks), nworkers)):
            while not free_sem.acquire(timeout=0.1):
                if stop_evt.is_set():
                    return
            if stop_evt.is_set():
                return
            slot = k % n_slots
            idx = chunks[c]
            try:
                src.read_into(buf[slot, : len(idx)], idx)
            except FrameReadError as e:
                out_q.put(("error", c, str(e)))
                return
            except Exception as e:  # noqa: BLE001
                out_q.put(("error", c, f"reading images {idx[0]}-{idx[-1]} failed: {one_line(e)}"))
                return
            out_q.put(("ok", c, slot))
    finally:
        del buf
        src.close()
        shm.close()


_CHILD_BOOT = (
    "import importlib.util as _u\n"
    "_s = _u.spec_from_file_location('_jfx_h5util_reader', _path)\n"
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
