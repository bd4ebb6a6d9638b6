"""NXmx metadata other than the geometry: pixel conventions, sample, stored spots.

Pure readers from h5py groups to plain values / :mod:`jfx.models` types:

* :data:`SUPPORTED_DTYPES`, :func:`error_value_of`, :func:`error_value_for` — pixel types
  and their invalid-pixel marker.
* :func:`detector_group`, :func:`read_pixel_mask`, :func:`read_saturation_value` —
  ``/entry/instrument/detector`` scalars and mask.
* :func:`read_unit_cell`, :func:`parse_space_group` — ``/entry/sample`` crystal metadata.
* :func:`read_stored_spots` — spot lists in ``/entry/MX`` (or ``/entry/result``) →
  :class:`jfx.models.spots.StoredSpots`.

``path`` arguments are the master file's path, used only in the one-line
:class:`~jfx.io.errors.InputError` messages.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from jfx.io.errors import InputError
from jfx.io.h5util import missing_filters, one_line, read_scalar
from jfx.models.spots import StoredSpots

SUPPORTED_DTYPES = (np.dtype("int16"), np.dtype("int32"), np.dtype("uint16"), np.dtype("uint32"))


def error_value_of(dtype) -> int:
    """Invalid-pixel marker of a pixel type: type minimum (signed) / maximum (unsigned)."""
    dt = np.dtype(dtype)
    info = np.iinfo(dt)
    return int(info.min) if dt.kind == "i" else int(info.max)


def error_value_for(dtype: np.dtype) -> int:
    """``error_value`` of a file whose pixel type is ``dtype``: :func:`error_value_of` for the
    supported types; otherwise (data deferred with ``check_data=False``) the type minimum of
    a signed integer type, else 0."""
    if dtype in SUPPORTED_DTYPES:
        return error_value_of(dtype)
    return int(np.iinfo(dtype).min) if dtype.kind == "i" else 0


def detector_group(f: h5py.File, path: Path) -> h5py.Group:
    """``/entry/instrument/detector`` (InputError if missing)."""
    det = f.get("entry/instrument/detector")
    if not isinstance(det, h5py.Group):
        raise InputError(f"missing /entry/instrument/detector in {path}")
    return det


def read_pixel_mask(det: h5py.Group, image_shape: tuple[int, int], path: Path) -> np.ndarray:
    """(ny, nx) bool, True = invalid: nonzero ``pixel_mask`` of the detector group (or of
    ``detectorSpecific``); all False when the file has none."""
    ny, nx = image_shape
    pm = det.get("pixel_mask")
    if pm is None and "detectorSpecific" in det:
        pm = det["detectorSpecific"].get("pixel_mask")
    if not isinstance(pm, h5py.Dataset):
        return np.zeros((ny, nx), dtype=bool)
    miss = missing_filters(pm)
    if miss:
        raise InputError(f"HDF5 filter {', '.join(miss)} not available (needed by "
                         f"{pm.name} in {path})")
    if tuple(pm.shape) != (ny, nx):
        raise InputError(f"pixel_mask shape {tuple(pm.shape)} does not match the image "
                         f"shape {(ny, nx)} in {path}")
    try:
        return np.asarray(pm[()]) != 0
    except OSError as e:
        raise InputError(f"corrupt pixel_mask in {path}: {one_line(e)}") from None


def read_saturation_value(det: h5py.Group) -> float | None:
    """The detector's ``saturation_value`` field, or None."""
    sv = det.get("saturation_value")
    return read_scalar(sv) if isinstance(sv, h5py.Dataset) else None


def read_unit_cell(sample: h5py.Group, path: Path) -> tuple[float, ...] | None:
    """``/entry/sample/unit_cell`` as (a, b, c, α, β, γ) (Å, deg); None when absent or not
    finite and positive."""
    if "unit_cell" not in sample:
        return None
    uc = np.asarray(sample["unit_cell"][()], dtype=np.float64).ravel()
    if uc.size < 6:
        raise InputError(f"/entry/sample/unit_cell needs 6 numbers, has {uc.size} in {path}")
    if np.all(np.isfinite(uc[:6])) and np.all(uc[:6] > 0):
        return tuple(float(v) for v in uc[:6])
    return None


def read_space_group(sample: h5py.Group, path: Path) -> int | None:
    """``/entry/sample/space_group`` as a number 1–230, or None (absent, empty or 0)."""
    if "space_group" not in sample:
        return None
    return parse_space_group(sample["space_group"][()], path)


def parse_space_group(v, path: Path) -> int | None:
    """Space-group number from a stored value (number, digit string or symbol)."""
    v = np.asarray(v)
    if v.dtype.kind in "iuf":
        n = int(v.ravel()[0]) if v.size else 0
    else:
        s = v.ravel()[0] if v.size else b""
        s = s.decode() if isinstance(s, bytes) else str(s)
        s = s.strip()
        if not s:
            return None
        if s.isdigit():
            n = int(s)
        else:
            import gemmi

            sg = gemmi.find_spacegroup_by_name(s)
            if sg is None:
                raise InputError(f"unknown space group '{s}' in /entry/sample/space_group "
                                 f"of {path}")
            n = sg.number
    if n == 0:
        return None
    if not 1 <= n <= 230:
        raise InputError(f"invalid space group number {n} in /entry/sample/space_group of {path}")
    return n


_SPOT_KEYS = ("nPeaks", "peakXPosRaw", "peakYPosRaw", "peakTotalIntensity")


def read_stored_spots(f: h5py.File, path: Path) -> StoredSpots | None:
    """Spot lists of ``/entry/MX`` (or ``/entry/result``), the first group holding all of
    ``nPeaks``, ``peakXPosRaw``, ``peakYPosRaw``, ``peakTotalIntensity``; None if none."""
    for gname in ("entry/MX", "entry/result"):
        g = f.get(gname)
        if not isinstance(g, h5py.Group):
            continue
        if not all(k in g for k in _SPOT_KEYS):
            continue
        try:
            n = np.asarray(g["nPeaks"][()]).astype(np.int32).ravel()
            x = np.asarray(g["peakXPosRaw"][()], dtype=np.float32)
            y = np.asarray(g["peakYPosRaw"][()], dtype=np.float32)
            inten = np.asarray(g["peakTotalIntensity"][()], dtype=np.float32)
        except OSError as e:
            raise InputError(f"unreadable stored spots in /{gname} of {path}: "
                             f"{one_line(e)}") from None
        if x.ndim != 2 or x.shape != y.shape or x.shape != inten.shape or x.shape[0] != n.size:
            raise InputError(f"inconsistent stored spot arrays in /{gname} of {path}")
        return StoredSpots(n, x, y, inten)
    return None
