"""Small HDF5 / file helpers shared by the readers and writers of :mod:`jfx.io`.

* :func:`dataset_filters` / :func:`missing_filters` — the HDF5 filter pipeline of a dataset
  and the filters this HDF5 build cannot decode.
* :func:`codec_name` — Jungfraujoch codec name ("bslz4", "bszstd", "none", …) of a dataset.
* :func:`read_str`, :func:`read_scalar`, :func:`attr_str` — tolerant readers for the many
  ways NeXus writers store strings and scalars (fixed/variable length, bytes, (1,) arrays).
* :func:`open_problem` — one line for an HDF5 file that cannot be opened (truncated: how
  many bytes are missing).

Frame reading (and ``dataset_filters``, ``one_line``, which it needs) lives in
:mod:`jfx.io.frame_reader`, a module reader processes load by path; writing outputs
(temporary files, atomic replacement, output sets, the check of the output location) in
:mod:`jfx.io.output_set`.
"""

from __future__ import annotations

import os
import re

import h5py
import numpy as np

from jfx.io.frame_reader import BITSHUFFLE_ID, FILTER_NAMES, dataset_filters, one_line

__all__ = ["BITSHUFFLE_ID", "FILTER_NAMES", "attr_str", "codec_name", "dataset_filters",
           "missing_filters", "one_line", "open_problem", "read_scalar", "read_str"]


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


_TRUNCATED = re.compile(r"truncated file: eof = (\d+),.*?stored_eof = (\d+)")


def open_problem(kind: str, path: str | os.PathLike, e: BaseException) -> str:
    """One line for an HDF5 file that cannot be opened: for a truncated file (HDF5's
    "truncated file: eof = N, ... stored_eof = M") what is missing, else the HDF5 message.
    ``kind``: "data file", "HDF5 file", … (start of the line)."""
    m = _TRUNCATED.search(str(e))
    if m:
        have, want = int(m.group(1)), int(m.group(2))
        return (f"{kind} {path} is truncated: the file has {have} bytes, its HDF5 header "
                f"records {want} ({want - have} bytes missing, an interrupted copy or "
                "write?); HDF5 cannot open it, copy the complete file")
    return f"cannot open {kind} {path}: {one_line(e)}"


