"""Reader for Jungfraujoch (and other NXmx) master files.

``open_master(path)`` parses an NXmx master file and returns a :class:`MasterFile`: image
stack description (layout, shape, dtype, codec), invalid-pixel conventions, the experimental
:class:`~jfx.models.geometry.Geometry` derived from the NXtransformations chains, optional
sample metadata (cell, space group, bandwidth), and lazy access to the frames.

Accepted layouts (see docs/input_format.md):

* ``"legacy"``: ``/entry/data/data_000001``, ``data_000002``, … external links to
  ``<name>_data_NNNNNN.h5:/entry/data/data``; images are concatenated in link order.
* ``"vds"``: ``/entry/data/data`` is a virtual dataset. Every source file is checked to
  exist and to contain its dataset (HDF5 silently returns fill values otherwise).
* ``"single"``: ``/entry/data/data`` is a real dataset in the master file.

Frames are never read eagerly. :meth:`MasterFile.iter_chunks` reads ahead in a background
thread (``workers=1``) or in ``workers`` reader processes (h5py serialises on a global lock,
so only processes scale), delivering chunks in order with bounded memory.

Frame: NXmx/McStas lab frame (z along the beam, y up). Pixel (0, 0) centre = (0.0, 0.0).
Every unusable input raises :class:`~jfx.io.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4/zstd HDF5 filters)
import numpy as np

from jfx.io.errors import InputError
from jfx.io.h5util import (
    FrameReader,
    FrameReadError,
    attr_str,
    codec_name,
    missing_filters,
    one_line,
    read_scalar,
    read_str,
    reader_process,
)
from jfx.models.geometry import Beam, Detector, Geometry, Goniometer

__all__ = ["MasterFile", "StoredSpots", "open_master", "SUPPORTED_DTYPES", "error_value_of"]

SUPPORTED_DTYPES = (np.dtype("int16"), np.dtype("int32"), np.dtype("uint16"), np.dtype("uint32"))

_LENGTH_M = {
    "m": 1.0, "meter": 1.0, "metre": 1.0, "meters": 1.0, "metres": 1.0,
    "cm": 1e-2, "mm": 1e-3, "millimeter": 1e-3, "millimetre": 1e-3, "millimeters": 1e-3,
    "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "microns": 1e-6, "micrometer": 1e-6,
    "micrometre": 1e-6, "nm": 1e-9, "nanometer": 1e-9, "angstrom": 1e-10, "angstroms": 1e-10,
    "a": 1e-10, "å": 1e-10, "ang": 1e-10,
}
_ANGLE_DEG = {
    "deg": 1.0, "degree": 1.0, "degrees": 1.0, "°": 1.0,
    "rad": 180.0 / math.pi, "radian": 180.0 / math.pi, "radians": 180.0 / math.pi,
}
_HC_KEV_A = 12.398419843320026  # h·c in keV·Å
_MATERIALS = {"silicon": "Si", "si": "Si", "cdte": "CdTe", "gaas": "GaAs", "germanium": "Ge"}


def error_value_of(dtype) -> int:
    """Invalid-pixel marker of a pixel type: type minimum (signed) / maximum (unsigned)."""
    dt = np.dtype(dtype)
    info = np.iinfo(dt)
    return int(info.min) if dt.kind == "i" else int(info.max)


@dataclass(frozen=True)
class StoredSpots:
    """Spot lists stored in the master file (CXI layout, ``/entry/MX``).

    Attributes:
        n_peaks: (n_images,) int32 number of valid spots per image.
        x_px, y_px: (n_images, max_spots) float32 centroids (px, first pixel centre = 0);
            padding as in the file (NaN or 0).
        intensity: (n_images, max_spots) float32 total intensity (photons).
    """

    n_peaks: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    intensity: np.ndarray


# ----------------------------------------------------------------------------------------
# frame access: jfx.io.h5util.FrameReader (also used, without jfx/JAX, by reader processes)


def _one_line(e: BaseException) -> str:
    return one_line(e)


# ----------------------------------------------------------------------------------------
# NXtransformations


@dataclass
class _Transform:
    path: str
    ttype: str            # "translation" | "rotation"
    vector: np.ndarray    # (3,) unit vector
    offset_m: np.ndarray  # (3,)
    values: np.ndarray    # (n,) metres (translation) or degrees (rotation)
    depends_on: str       # resolved-later reference ("." = end of chain)
    group: str            # parent group (for relative references)

    def value(self, k: int = 0) -> float:
        return float(self.values[min(k, len(self.values) - 1)])

    def matrix(self, k: int = 0) -> np.ndarray:
        """4×4 homogeneous matrix (NeXus: translation [I | o + v·x], rotation [R(v,x) | o])."""
        M = np.eye(4)
        if self.ttype == "rotation":
            M[:3, :3] = _rot(self.vector, math.radians(self.value(k)))
            M[:3, 3] = self.offset_m
        else:
            M[:3, 3] = self.offset_m + self.vector * self.value(k)
        return M


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


# ----------------------------------------------------------------------------------------


class MasterFile:
    """An opened NXmx master file (context manager). Create with :func:`open_master`.

    Attributes:
        path: master file path (made absolute).
        layout: "legacy" | "vds" | "single".
        n_images: number of images; image_shape: (ny, nx); dtype: pixel dtype.
        geometry: beam + detector (+ goniometer for rotation data, None for stills).
        omega_deg: (n_images,) start angle of each image (deg) or None (stills).
        pixel_mask: (ny, nx) bool, True = invalid (nonzero ``pixel_mask``).
        error_value: invalid-pixel marker (type min for signed, type max for unsigned).
        saturation_value: ``saturation_value`` field or None.
        unit_cell: (a, b, c, α, β, γ) (Å, deg) or None; space_group: number or None.
        bandwidth_fwhm: relative FWHM bandwidth Δλ/λ from the file or None.
        codec: "bslz4" | "bszstd" | "none" | other filter names.
        warnings: non-fatal findings (e.g. chain and fields disagree), for ``-v`` output.
    """

    def __init__(self, path: str | os.PathLike, *, check_data: bool = True):
        # absolute, so that lazily opened data files and reader processes do not depend on
        # the working directory
        self.path = Path(os.path.abspath(os.fspath(path)))
        self.warnings: list[str] = []
        self._data_error: str | None = None
        self._source: FrameReader | None = None
        self._spots_loaded = False
        self._stored_spots: StoredSpots | None = None
        self._tcache: list[tuple[str, str]] | None = None
        p = self.path
        if not p.exists():
            raise InputError(f"input file not found: {p}")
        if p.is_dir():
            raise InputError(f"input path is a directory, not a master file: {p}")
        try:
            ok = h5py.is_hdf5(p)
        except OSError:
            ok = False
        if not ok:
            raise InputError(f"not an HDF5 file: {p}")
        try:
            self._f = h5py.File(p, "r")
        except OSError as e:
            raise InputError(f"cannot open HDF5 file {p}: {_one_line(e)}") from None
        try:
            self._parse(check_data)
        except InputError:
            self.close()
            raise
        except (KeyError, ValueError, TypeError, OSError, IndexError) as e:
            self.close()
            raise InputError(f"malformed NXmx master file {p}: {_one_line(e)}") from None

    # ------------------------------------------------------------------ parsing
    def _parse(self, check_data: bool) -> None:
        f, p = self._f, self.path
        if "entry" not in f or not isinstance(f.get("entry"), h5py.Group):
            raise InputError(f"not an NXmx file (no /entry group): {p}")
        if "definition" not in f["entry"]:
            raise InputError(f"not an NXmx file (no /entry/definition): {p}")
        definition = read_str(f["entry/definition"])
        if definition != "NXmx":
            raise InputError(f"not an NXmx file (/entry/definition is '{definition}'): {p}")

        self._setup_data(check_data)
        self._parse_detector_misc()
        self._parse_geometry()
        self._parse_sample()

    # -- image data
    def _ext_target(self, link: h5py.ExternalLink) -> Path:
        fn = Path(link.filename)
        return fn if fn.is_absolute() else self.path.parent / fn

    def _setup_data(self, check_data: bool) -> None:
        f, p = self._f, self.path
        g = f.get("entry/data")
        if not isinstance(g, h5py.Group):
            raise InputError(f"no image data (/entry/data missing): {p}")
        errors: list[str] = []
        segments: list[tuple[str, str, int, int]] = []
        vds_files: list[tuple[tuple[int, ...], str]] = []
        dsets: list[h5py.Dataset] = []
        self._opened: list[h5py.File] = []  # data files opened for validation
        shape3: tuple[int, ...] | None = None
        dtype = None
        link = g.get("data", getlink=True) if "data" in g or _has_link(g, "data") else None
        legacy_keys = sorted(k for k in g.keys() if k.startswith("data_") and k[5:].isdigit())
        if link is not None and not isinstance(link, h5py.ExternalLink):
            obj = g.get("data")
            if obj is None:
                raise InputError(f"no image data (/entry/data/data is a dangling link): {p}")
            if not isinstance(obj, h5py.Dataset):
                raise InputError(f"no image data (/entry/data/data is not a dataset): {p}")
            shape3, dtype = obj.shape, obj.dtype
            if obj.is_virtual:
                self.layout = "vds"
                segments.append((str(p), obj.name, 0, obj.shape[0] if obj.ndim else 0))
                for vs in obj.virtual_sources():
                    src_ds, fname, err = self._check_vds_source(vs)
                    if err:
                        errors.append(err)
                        continue
                    dsets.append(src_ds)
                    idx = _vspace_images(vs.vspace)
                    if idx is not None:
                        vds_files.append((tuple(idx), fname))
                if not obj.virtual_sources():
                    errors.append(f"virtual dataset /entry/data/data has no sources in {p}")
            else:
                self.layout = "single"
                segments.append((str(p), obj.name, 0, obj.shape[0] if obj.ndim else 0))
                dsets.append(obj)
        else:
            links = []
            if isinstance(link, h5py.ExternalLink):
                links.append(("data", link))
            for k in legacy_keys:
                links.append((k, g.get(k, getlink=True)))
            if not links:
                raise InputError(f"no image data in /entry/data (no 'data' or 'data_NNNNNN'): {p}")
            self.layout = "legacy"
            start = 0
            shapes = []
            for name, lk in links:
                if isinstance(lk, h5py.ExternalLink):
                    target = self._ext_target(lk)
                    if not target.exists():
                        errors.append(
                            f"missing data file {target} (linked from /entry/data/{name} in {p})")
                        continue
                    try:
                        df = h5py.File(target, "r")
                    except OSError as e:
                        errors.append(f"cannot open data file {target}: {_one_line(e)}")
                        continue
                    self._opened.append(df)
                    ds = df.get(lk.path)
                    if not isinstance(ds, h5py.Dataset):
                        errors.append(f"data file {target} has no dataset {lk.path}")
                        continue
                    fname, dpath = str(target), lk.path
                else:
                    ds = g.get(name)
                    if not isinstance(ds, h5py.Dataset):
                        errors.append(f"/entry/data/{name} is not a dataset in {p}")
                        continue
                    fname, dpath = str(p), ds.name
                if ds.ndim != 3:
                    errors.append(f"image data must be 3-D (n, ny, nx); {fname}:{dpath} has shape {ds.shape}")
                    continue
                shapes.append((fname, ds.shape[1:]))
                if shapes[0][1] != ds.shape[1:]:
                    errors.append(
                        f"inconsistent frame shapes: {fname} has {ds.shape[1:]}, "
                        f"{shapes[0][0]} has {shapes[0][1]}")
                    continue
                if dtype is not None and ds.dtype != dtype:
                    errors.append(f"inconsistent pixel types: {fname} is {ds.dtype}, expected {dtype}")
                    continue
                dtype = ds.dtype
                segments.append((fname, dpath, start, int(ds.shape[0])))
                dsets.append(ds)
                start += ds.shape[0]
            if segments:
                shape3 = (start,) + tuple(shapes[0][1])

        if shape3 is not None and len(shape3) != 3:
            errors.append(f"image data must be 3-D (n, ny, nx); got shape {shape3} in {p}")
        if dtype is not None and np.dtype(dtype) not in SUPPORTED_DTYPES:
            errors.append(
                f"unsupported pixel data type {np.dtype(dtype)} (supported: int16, int32, "
                f"uint16, uint32) in {p}")
        for ds in dsets:
            miss = missing_filters(ds)
            if miss:
                errors.append(f"HDF5 filter {', '.join(miss)} not available (needed by "
                              f"{ds.file.filename}:{ds.name})")
                break
        if shape3 is not None and len(shape3) == 3 and shape3[0] == 0 and not errors:
            errors.append(f"no image data (0 images) in {p}")

        self.codec = codec_name(dsets[0]) if dsets else "none"
        # data files opened for validation: close (the frame reader reopens lazily)
        dsets.clear()
        for df in self._opened:
            try:
                df.close()
            except Exception:  # noqa: BLE001
                pass
        self._opened.clear()
        if errors:
            if check_data:
                raise InputError(errors[0])
            self._data_error = errors[0]
        # shape / dtype, falling back to detectorSpecific when data are unavailable
        if errors and self.layout == "legacy":
            shape3 = None  # some data files unusable: image count unknown from the data
        if shape3 is None or len(shape3) != 3:
            ds_ = f.get("entry/instrument/detector/detectorSpecific")
            try:
                ny = int(read_scalar(ds_["y_pixels_in_detector"]))
                nx = int(read_scalar(ds_["x_pixels_in_detector"]))
                n = int(read_scalar(ds_["nimages"]))
            except (TypeError, KeyError, ValueError):
                raise InputError(errors[0] if errors else f"no image data in {p}") from None
            shape3 = (n, ny, nx)
        self.n_images = int(shape3[0])
        self.image_shape = (int(shape3[1]), int(shape3[2]))
        self.dtype = np.dtype(dtype) if dtype is not None else np.dtype("int32")
        self.error_value = (error_value_of(self.dtype) if self.dtype in SUPPORTED_DTYPES
                            else int(np.iinfo(self.dtype).min) if self.dtype.kind == "i" else 0)
        if not self._data_error:
            self._spec = dict(vds=self.layout == "vds", segments=segments,
                              shape=self.image_shape, dtype=self.dtype.str, vds_files=vds_files)
            self._source = FrameReader(self._spec)

    def _check_vds_source(self, vs) -> tuple[h5py.Dataset | None, str, str | None]:
        p = self.path
        fname = vs.file_name
        if fname == ".":
            src_file, sf = p, self._f
        else:
            src_file = Path(fname) if Path(fname).is_absolute() else p.parent / fname
            if not src_file.exists():
                return None, str(src_file), (
                    f"missing data file {src_file} (source of virtual dataset "
                    f"/entry/data/data in {p})")
            try:
                sf = h5py.File(src_file, "r")
            except OSError as e:
                return None, str(src_file), f"cannot open data file {src_file}: {_one_line(e)}"
            self._opened.append(sf)
        lk = _get_link(sf, vs.dset_name)
        if isinstance(lk, h5py.ExternalLink):
            target = Path(lk.filename)
            target = target if target.is_absolute() else Path(src_file).parent / target
            if not target.exists():
                return None, str(target), (
                    f"missing data file {target} (external link {vs.dset_name} in {src_file})")
        ds = sf.get(vs.dset_name) if lk is not None else None
        if not isinstance(ds, h5py.Dataset):
            return None, str(src_file), (
                f"data file {src_file} has no dataset {vs.dset_name} "
                f"(source of virtual dataset /entry/data/data)")
        try:  # a truncated source would silently read as fill values
            mapped = int(vs.vspace.get_select_npoints())
        except Exception:  # noqa: BLE001 - unlimited selections
            mapped = 0
        if ds.size < mapped:
            return None, str(src_file), (
                f"data file {src_file} is too small: {vs.dset_name} has shape {ds.shape} "
                f"({ds.size} pixels), the virtual dataset maps {mapped} pixels to it")
        return ds, str(src_file), None

    # -- detector scalars, mask
    def _parse_detector_misc(self) -> None:
        f, p = self._f, self.path
        det = f.get("entry/instrument/detector")
        if not isinstance(det, h5py.Group):
            raise InputError(f"missing /entry/instrument/detector in {p}")
        self._det = det
        ny, nx = self.image_shape
        self.pixel_mask = np.zeros((ny, nx), dtype=bool)
        pm = det.get("pixel_mask")
        if pm is None and "detectorSpecific" in det:
            pm = det["detectorSpecific"].get("pixel_mask")
        if isinstance(pm, h5py.Dataset):
            miss = missing_filters(pm)
            if miss:
                raise InputError(f"HDF5 filter {', '.join(miss)} not available (needed by "
                                 f"{pm.name} in {p})")
            if tuple(pm.shape) != (ny, nx):
                raise InputError(f"pixel_mask shape {tuple(pm.shape)} does not match the image "
                                 f"shape {(ny, nx)} in {p}")
            try:
                self.pixel_mask = np.asarray(pm[()]) != 0
            except OSError as e:
                raise InputError(f"corrupt pixel_mask in {p}: {_one_line(e)}") from None
        sv = det.get("saturation_value")
        self.saturation_value = read_scalar(sv) if isinstance(sv, h5py.Dataset) else None

    # -- geometry
    def _length(self, ds: h5py.Dataset, default_unit: str = "m") -> float:
        """Scalar length in metres, honouring the ``units`` attribute."""
        return read_scalar(ds) * self._len_factor(attr_str(ds, "units", default_unit), ds.name)

    def _len_factor(self, unit: str | None, where: str) -> float:
        u = (unit or "m").strip().lower()
        if u not in _LENGTH_M:
            raise InputError(f"unknown length unit '{unit}' for {where} in {self.path}")
        return _LENGTH_M[u]

    def _angle_factor(self, unit: str | None, where: str) -> float:
        u = (unit or "deg").strip().lower()
        if u not in _ANGLE_DEG:
            raise InputError(f"unknown angle unit '{unit}' for {where} in {self.path}")
        return _ANGLE_DEG[u]

    def _transform_index(self) -> list[tuple[str, str]]:
        if self._tcache is None:
            found: list[tuple[str, str]] = []

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and "transformation_type" in obj.attrs:
                    found.append((name.rsplit("/", 1)[-1], "/" + name))

            self._f["entry"].visititems(lambda n, o: visit("entry/" + n, o))
            self._tcache = found
        return self._tcache

    def _resolve(self, ref: str, group: str, who: str) -> h5py.Dataset:
        """Dataset named by a depends_on reference (absolute or relative to ``group``).

        Real files sometimes point at a path that does not exist while the transformation is
        stored elsewhere under the same name (e.g. DLS ``/entry/sample/transformations/phi``
        vs ``/entry/sample/sample_phi/phi``): then the unique transformation dataset with that
        name, preferring the longest common path prefix, is used and a warning recorded.
        """
        full = ref if ref.startswith("/") else f"{group.rstrip('/')}/{ref}"
        obj = self._f.get(full)
        if isinstance(obj, h5py.Dataset):
            return obj
        base = full.rstrip("/").rsplit("/", 1)[-1]
        cands = [path for name, path in self._transform_index() if name == base]
        if not cands:
            raise InputError(f"broken NXtransformations chain: {full} (depends_on of {who}) "
                             f"not found in {self.path}")

        def common(a: str, b: str) -> int:
            n = 0
            for x, y in zip(a.split("/"), b.split("/")):
                if x != y:
                    break
                n += 1
            return n

        cands.sort(key=lambda c: -common(c, full))
        if len(cands) > 1 and common(cands[0], full) == common(cands[1], full):
            raise InputError(f"broken NXtransformations chain: {full} not found and the name "
                             f"'{base}' is ambiguous in {self.path}")
        self.warnings.append(f"depends_on target {full} not found; using {cands[0]}")
        return self._f[cands[0]]

    def _read_transform(self, ds: h5py.Dataset) -> _Transform:
        ttype = (attr_str(ds, "transformation_type", "") or "").lower()
        if ttype not in ("translation", "rotation"):
            raise InputError(f"{ds.name}: transformation_type '{ttype}' is not translation or "
                             f"rotation in {self.path}")
        if "vector" not in ds.attrs:
            raise InputError(f"{ds.name}: transformation without a 'vector' attribute in {self.path}")
        vec = np.asarray(ds.attrs["vector"], dtype=np.float64).ravel()
        if vec.size != 3 or not np.all(np.isfinite(vec)) or np.linalg.norm(vec) == 0:
            raise InputError(f"{ds.name}: invalid 'vector' attribute {vec.tolist()} in {self.path}")
        vec = vec / np.linalg.norm(vec)
        units = attr_str(ds, "units")
        values = np.asarray(ds[()], dtype=np.float64).ravel()
        if values.size == 0:
            values = np.zeros(1)
        if ttype == "rotation":
            values = values * self._angle_factor(units, ds.name)
            off_unit = attr_str(ds, "offset_units", "m")
        else:
            values = values * self._len_factor(units, ds.name)
            off_unit = attr_str(ds, "offset_units", units or "m")
        offset = np.zeros(3)
        if "offset" in ds.attrs:
            offset = np.asarray(ds.attrs["offset"], dtype=np.float64).ravel()
            if offset.size != 3:
                raise InputError(f"{ds.name}: invalid 'offset' attribute in {self.path}")
            offset = offset * self._len_factor(off_unit, ds.name + "@offset")
        dep = attr_str(ds, "depends_on", ".") or "."
        return _Transform(ds.name, ttype, vec, offset, values, dep, ds.parent.name)

    def _chain(self, ref: str, group: str, who: str) -> list[_Transform]:
        """Transformations from ``ref`` (innermost) to the end of the chain (outermost)."""
        chain: list[_Transform] = []
        seen: set[str] = set()
        while ref and ref.strip() != ".":
            ds = self._resolve(ref.strip(), group, who)
            if ds.name in seen or len(chain) > 64:
                raise InputError(f"circular NXtransformations chain at {ds.name} in {self.path}")
            seen.add(ds.name)
            t = self._read_transform(ds)
            chain.append(t)
            who, ref, group = t.path, t.depends_on, t.group
        return chain

    @staticmethod
    def _chain_matrix(chain: list[_Transform], k: int = 0) -> np.ndarray:
        M = np.eye(4)
        for t in chain:  # inner → outer: M = T_outer … T_inner
            M = t.matrix(k) @ M
        return M

    def _detector_chain(self):
        """(origin_m (3,), fast (3,), slow (3,), fast_size_m, slow_size_m) from the file's
        NXtransformations, or None if the file has no detector chain."""
        det = self._det
        module = det.get("module")
        if not isinstance(module, h5py.Group):
            module = None
            for k in det:
                o = det.get(k)
                if isinstance(o, h5py.Group) and attr_str(o, "NX_class") == "NXdetector_module":
                    module = o
                    break
        if module is not None and "fast_pixel_direction" in module and "slow_pixel_direction" in module:
            ft = self._read_transform(module["fast_pixel_direction"])
            st = self._read_transform(module["slow_pixel_direction"])
            Mf = self._chain_matrix(self._chain(ft.depends_on, ft.group, ft.path))
            Ms = self._chain_matrix(self._chain(st.depends_on, st.group, st.path))
            fast = Mf[:3, :3] @ ft.vector
            slow = Ms[:3, :3] @ st.vector
            origin = (Mf @ np.append(ft.offset_m, 1.0))[:3] + Ms[:3, :3] @ st.offset_m
            if not np.allclose(Mf[:3, 3], Ms[:3, 3], atol=1e-9):
                self.warnings.append("fast and slow pixel directions depend on different "
                                     "positions; using the fast one's")
            return origin, fast, slow, ft.value(), st.value()
        dep = det.get("depends_on")
        if isinstance(dep, h5py.Dataset):
            ref = read_str(dep)
            if ref and ref != ".":
                M = self._chain_matrix(self._chain(ref, det.name, det.name + "/depends_on"))
                return (M[:3, 3], M[:3, :3] @ np.array([1.0, 0, 0]),
                        M[:3, :3] @ np.array([0, 1.0, 0]), None, None)
        return None

    def _parse_geometry(self) -> None:
        f, p, det = self._f, self.path, self._det
        beam_g = f.get("entry/instrument/beam")
        # wavelength
        wl = None
        if isinstance(beam_g, h5py.Group) and "incident_wavelength" in beam_g:
            ds = beam_g["incident_wavelength"]
            wl = read_scalar(ds) * self._len_factor(attr_str(ds, "units", "angstrom"), ds.name) / 1e-10
        elif isinstance(beam_g, h5py.Group) and "incident_energy" in beam_g:
            ds = beam_g["incident_energy"]
            e = read_scalar(ds)
            u = (attr_str(ds, "units") or ("eV" if e > 100 else "keV")).strip().lower()
            scale = {"ev": 1e-3, "kev": 1.0, "mev": 1e3}.get(u)
            if scale is None:
                raise InputError(f"unknown energy unit '{u}' for {ds.name} in {p}")
            if e > 0:
                wl = _HC_KEV_A / (e * scale)
        if wl is None or not np.isfinite(wl) or wl <= 0:
            raise InputError(f"missing or invalid wavelength (/entry/instrument/beam/"
                             f"incident_wavelength or incident_energy) in {p}")
        self._wavelength_A = wl

        chain = self._detector_chain()
        # pixel size
        psz = []
        for key, ci in (("x_pixel_size", 3), ("y_pixel_size", 4)):
            if key in det:
                psz.append(self._length(det[key]))
            elif chain is not None and chain[ci]:
                psz.append(float(chain[ci]))
            else:
                raise InputError(f"missing pixel size (/entry/instrument/detector/{key}) in {p}")
        if chain is not None and chain[3] and abs(chain[3] - psz[0]) > 1e-3 * psz[0]:
            self.warnings.append(f"x_pixel_size {psz[0]} m differs from the fast_pixel_direction "
                                 f"step {chain[3]} m")
        px_mm, py_mm = psz[0] * 1e3, psz[1] * 1e3
        if not (px_mm > 0 and py_mm > 0):
            raise InputError(f"invalid pixel size {psz} m in {p}")

        if chain is not None:
            origin_mm = np.asarray(chain[0]) * 1e3
            fast, slow = np.asarray(chain[1]), np.asarray(chain[2])
            fast, slow = fast / np.linalg.norm(fast), slow / np.linalg.norm(slow)
            if abs(float(fast @ slow)) > 1e-3:
                raise InputError(f"fast and slow pixel directions are not perpendicular "
                                 f"(fast {fast.round(4).tolist()}, slow {slow.round(4).tolist()}) in {p}")
        else:
            origin_mm, fast, slow = None, np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
        self.chain_origin_mm = origin_mm
        b = np.array([0.0, 0.0, 1.0])

        # chain-implied beam centre and distance
        chain_bc = chain_d = None
        if origin_mm is not None:
            n = np.cross(fast, slow)
            bn = float(b @ n)
            if abs(bn) < 1e-6:
                raise InputError(f"detector plane is parallel to the beam in {p}")
            t = float(origin_mm @ n) / bn
            if t <= 0:
                raise InputError(f"detector is behind the sample (distance {t:.3f} mm) in {p}")
            hit = t * b - origin_mm
            chain_bc = (float(hit @ fast) / px_mm, float(hit @ slow) / py_mm)
            chain_d = t
        self.chain_beam_center_px = chain_bc
        self.chain_distance_mm = chain_d

        have_bc = "beam_center_x" in det and "beam_center_y" in det
        if have_bc:
            bx, by = read_scalar(det["beam_center_x"]), read_scalar(det["beam_center_y"])
            for key, v in (("beam_center_x", bx), ("beam_center_y", by)):
                u = (attr_str(det[key], "units", "pixel") or "pixel").lower()
                if u not in ("pixel", "pixels", "px", ""):
                    raise InputError(f"{key} must be in pixels (units '{u}') in {p}")
        elif chain_bc is not None:
            bx, by = chain_bc
        else:
            raise InputError(f"missing beam centre: neither beam_center_x/y nor a detector "
                             f"NXtransformations chain in {p}")
        dist_ds = det.get("detector_distance")
        if not isinstance(dist_ds, h5py.Dataset):
            dist_ds = det.get("distance")
        if isinstance(dist_ds, h5py.Dataset):
            dist_mm = self._length(dist_ds) * 1e3
        elif chain_d is not None:
            dist_mm = chain_d
        else:
            raise InputError(f"missing detector distance: neither detector_distance nor a "
                             f"detector NXtransformations chain in {p}")
        if not (np.isfinite(dist_mm) and dist_mm > 0):
            raise InputError(f"invalid detector distance {dist_mm} mm in {p}")
        if chain_bc is not None:
            dbx, dby = abs(chain_bc[0] - bx), abs(chain_bc[1] - by)
            if dbx > 1.0 or dby > 1.0 or abs(chain_d - dist_mm) > 0.01 * dist_mm:
                self.warnings.append(
                    f"detector NXtransformations imply beam centre ({chain_bc[0]:.2f}, "
                    f"{chain_bc[1]:.2f}) px and distance {chain_d:.3f} mm, but the fields say "
                    f"({bx:.2f}, {by:.2f}) px and {dist_mm:.3f} mm; using the fields")

        thick_mm = 0.32
        if "sensor_thickness" in det:
            thick_mm = self._length(det["sensor_thickness"]) * 1e3
        material = "Si"
        if "sensor_material" in det:
            m = read_str(det["sensor_material"])
            material = _MATERIALS.get(m.lower(), m) if m else "Si"

        detector = Detector.create(
            distance_mm=dist_mm, beam_center_px=(bx, by), shape=self.image_shape,
            pixel_size_mm=(px_mm, py_mm), fast_axis=fast, slow_axis=slow,
            sensor_thickness_mm=thick_mm, sensor_material=material,
        )

        # bandwidth, polarisation
        self.bandwidth_fwhm = None
        pol_frac, pol_axis = 0.99, (1.0, 0.0, 0.0)
        if isinstance(beam_g, h5py.Group):
            if "incident_wavelength_spread" in beam_g:
                ds = beam_g["incident_wavelength_spread"]
                spread_A = read_scalar(ds) * self._len_factor(
                    attr_str(ds, "units", "angstrom"), ds.name) / 1e-10
                self.bandwidth_fwhm = spread_A / wl
            elif "bandwidth" in beam_g:
                self.bandwidth_fwhm = read_scalar(beam_g["bandwidth"])
            if "incident_polarization_stokes" in beam_g:
                s = np.asarray(beam_g["incident_polarization_stokes"][()], float).ravel()
                if s.size >= 3 and s[0] > 0:
                    plin = min(1.0, math.hypot(s[1], s[2]) / s[0])
                    psi = 0.5 * math.atan2(s[2], s[1])
                    pol_frac = 0.5 * (1.0 + plin)
                    pol_axis = (math.cos(psi), math.sin(psi), 0.0)
        self.polarization_fraction = pol_frac
        beam = Beam.create(wl, bandwidth_fwhm=self.bandwidth_fwhm or 0.0,
                           polarization_fraction=pol_frac, polarization_axis=pol_axis)
        self._beam, self._detector = beam, detector

    def _parse_sample(self) -> None:
        f, p = self._f, self.path
        sample = f.get("entry/sample")
        self.omega_deg = None
        self.unit_cell = None
        self.space_group = None
        gonio = None
        if isinstance(sample, h5py.Group):
            ref = None
            if "depends_on" in sample:
                d = sample["depends_on"]
                ref = read_str(d) if isinstance(d, h5py.Dataset) else attr_str(sample, "depends_on")
            elif "transformations" in sample and "omega" in sample["transformations"]:
                ref = "/entry/sample/transformations/omega"
            if ref and ref != ".":
                gonio = self._goniometer(self._chain(ref, sample.name, sample.name + "/depends_on"))
            if "unit_cell" in sample:
                uc = np.asarray(sample["unit_cell"][()], dtype=np.float64).ravel()
                if uc.size < 6:
                    raise InputError(f"/entry/sample/unit_cell needs 6 numbers, has {uc.size} in {p}")
                if np.all(np.isfinite(uc[:6])) and np.all(uc[:6] > 0):
                    self.unit_cell = tuple(float(v) for v in uc[:6])
            if "space_group" in sample:
                self.space_group = _space_group(sample["space_group"][()], p)
        self.geometry = Geometry(beam=self._beam, detector=self._detector, goniometer=gonio)

    def _goniometer(self, chain: list[_Transform]) -> Goniometer | None:
        p = self.path
        scans = []
        for k, t in enumerate(chain):
            if t.ttype != "rotation":
                continue
            distinct = np.unique(np.round(t.values, 9)).size
            inc = self._increment_set(t)
            if distinct > 1 or (inc is not None and inc != 0.0):
                scans.append((k, t, inc))
        if not scans:
            return None
        if len(scans) > 1:
            raise InputError(f"more than one scanned rotation axis ({', '.join(s[1].path for s in scans)}) "
                             f"in {p}")
        k, t, inc = scans[0]
        vals = t.values
        if vals.size < self.n_images:
            raise InputError(f"{t.path} has {vals.size} angles for {self.n_images} images in {p}")
        vals = vals[: self.n_images]
        if inc is None:
            if vals.size < 2:
                raise InputError(f"cannot derive the rotation increment of {t.path} in {p}")
            diffs = np.diff(vals)
            inc = float(np.median(diffs))
            if np.max(np.abs(diffs - inc)) > 1e-3:
                raise InputError(f"rotation angles of {t.path} are not uniformly spaced "
                                 f"(steps {diffs.min():.4f}..{diffs.max():.4f} deg) in {p}")
        elif vals.size > 1 and np.max(np.abs(np.diff(vals) - inc)) > 1e-3:
            raise InputError(f"rotation angles of {t.path} do not follow the increment {inc} deg "
                             f"in {p}")
        outer = self._chain_matrix(chain[k + 1:])
        axis = outer[:3, :3] @ t.vector
        self.omega_deg = vals.astype(np.float64)
        self.scan_axis_path = t.path
        return Goniometer.create(axis, float(vals[0]), float(inc))

    def _increment_set(self, t: _Transform) -> float | None:
        name = t.path.rsplit("/", 1)[-1] + "_increment_set"
        for g in (t.group, "/entry/sample/transformations"):
            grp = self._f.get(g)
            if isinstance(grp, h5py.Group) and name in grp:
                ds = grp[name]
                return read_scalar(ds) * self._angle_factor(attr_str(ds, "units", "deg"), ds.name)
        return None

    # ------------------------------------------------------------------ public API
    @property
    def stored_spots(self) -> StoredSpots | None:
        """Spot lists stored in ``/entry/MX`` (or ``/entry/result``), loaded on first use."""
        if not self._spots_loaded:
            self._spots_loaded = True
            for gname in ("entry/MX", "entry/result"):
                g = self._f.get(gname)
                if not isinstance(g, h5py.Group):
                    continue
                keys = ("nPeaks", "peakXPosRaw", "peakYPosRaw", "peakTotalIntensity")
                if not all(k in g for k in keys):
                    continue
                try:
                    n = np.asarray(g["nPeaks"][()]).astype(np.int32).ravel()
                    x = np.asarray(g["peakXPosRaw"][()], dtype=np.float32)
                    y = np.asarray(g["peakYPosRaw"][()], dtype=np.float32)
                    inten = np.asarray(g["peakTotalIntensity"][()], dtype=np.float32)
                except OSError as e:
                    raise InputError(f"unreadable stored spots in /{gname} of {self.path}: "
                                     f"{_one_line(e)}") from None
                if x.ndim != 2 or x.shape != y.shape or x.shape != inten.shape or x.shape[0] != n.size:
                    raise InputError(f"inconsistent stored spot arrays in /{gname} of {self.path}")
                self._stored_spots = StoredSpots(n, x, y, inten)
                break
        return self._stored_spots

    def _require_data(self) -> FrameReader:
        if self._data_error:
            raise InputError(self._data_error)
        if self._source is None:
            raise InputError(f"file is closed: {self.path}")
        return self._source

    def _check_indices(self, indices) -> list[int]:
        idx = [int(i) for i in np.asarray(indices).ravel()]
        for i in idx:
            if not 0 <= i < self.n_images:
                raise IndexError(f"image {i} out of range 0..{self.n_images - 1}")
        return idx

    def read_frame(self, i: int) -> np.ndarray:
        """Image ``i`` (0-based) as a (ny, nx) array of the native dtype."""
        return self.read_frames([i])[0]

    def read_frames(self, indices: Iterable[int]) -> np.ndarray:
        """Images ``indices`` as a (k, ny, nx) array of the native dtype."""
        src = self._require_data()
        idx = self._check_indices(list(indices))
        out = np.empty((len(idx),) + self.image_shape, dtype=self.dtype)
        try:
            src.read_into(out, idx)
        except FrameReadError as e:
            raise InputError(str(e)) from None
        return out

    def invalid_mask(self, frames: np.ndarray) -> np.ndarray:
        """bool (…, ny, nx): True where ``pixel_mask`` is set or the pixel is ``error_value``."""
        frames = np.asarray(frames)
        return self.pixel_mask | (frames == np.asarray(self.error_value).astype(frames.dtype))

    def iter_chunks(self, indices: Iterable[int] | None = None, chunk_size: int = 4,
                    workers: int = 1, prefetch: int = 2
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over images in chunks, reading ahead in the background.

        Args:
            indices: image numbers to read (default: all), delivered in this order.
            chunk_size: images per chunk (the last chunk may be shorter).
            workers: 0 = read synchronously in the caller; 1 = one background reader thread;
                >1 = that many reader *processes* (each opens the file itself and reads every
                ``workers``-th chunk into shared memory; chunks are delivered in order).
            prefetch: at most this many chunks are read ahead (memory bound ≈
                (prefetch + workers) · chunk_size frames).
        Yields:
            (indices (k,) int64, frames (k, ny, nx) native dtype), each frames array owned by
            the caller.
        Raises:
            InputError naming the image and the file when a chunk cannot be read.
        """
        src = self._require_data()
        idx = self._check_indices(range(self.n_images) if indices is None else list(indices))
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        chunks = [idx[i:i + chunk_size] for i in range(0, len(idx), chunk_size)]
        if not chunks:
            return iter(())
        if workers <= 0 or prefetch <= 0:
            return self._iter_sync(src, chunks)
        if workers == 1 or len(chunks) == 1:
            return self._iter_thread(src, chunks, prefetch)
        return self._iter_procs(chunks, min(workers, len(chunks)), prefetch)

    def _iter_sync(self, src, chunks):
        for c in chunks:
            out = np.empty((len(c),) + self.image_shape, dtype=self.dtype)
            try:
                src.read_into(out, c)
            except FrameReadError as e:
                raise InputError(str(e)) from None
            yield np.asarray(c, dtype=np.int64), out

    def _iter_thread(self, src, chunks, prefetch):
        q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def run():
            try:
                for c in chunks:
                    if stop.is_set():
                        return
                    out = np.empty((len(c),) + self.image_shape, dtype=self.dtype)
                    src.read_into(out, c)
                    if not put(("ok", c, out)):
                        return
            except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
                put(("error", None, e))
                return
            put(("done", None, None))

        th = threading.Thread(target=run, name="jfx-reader", daemon=True)
        th.start()
        try:
            while True:
                kind, c, payload = q.get()
                if kind == "done":
                    return
                if kind == "error":
                    if isinstance(payload, (InputError, FrameReadError)):
                        raise InputError(str(payload)) from None
                    raise InputError(f"reading {self.path} failed: {_one_line(payload)}") from None
                yield np.asarray(c, dtype=np.int64), payload
        finally:
            stop.set()
            th.join(timeout=10)

    def _iter_procs(self, chunks, nw, prefetch):
        from multiprocessing import shared_memory

        ctx = mp.get_context("spawn")
        n_slots = max(1, math.ceil(prefetch / nw))
        cmax = max(len(c) for c in chunks)
        slot_bytes = cmax * self.image_shape[0] * self.image_shape[1] * self.dtype.itemsize
        stop = ctx.Event()
        shms, sems, queues, procs, bufs = [], [], [], [], []
        try:
            for w in range(nw):
                shm = shared_memory.SharedMemory(create=True, size=max(1, n_slots * slot_bytes))
                shms.append(shm)
                bufs.append(np.ndarray((n_slots, cmax) + self.image_shape, dtype=self.dtype,
                                       buffer=shm.buf))
                sems.append(ctx.Semaphore(n_slots))
                queues.append(ctx.Queue())
            with _no_main_reimport():
                for w in range(nw):
                    pr = reader_process(ctx, f"jfx-reader-{w}",
                                        (self._spec, chunks, w, nw, shms[w].name, n_slots,
                                         sems[w], queues[w], stop))
                    pr.start()
                    procs.append(pr)
            for c in range(len(chunks)):
                w = c % nw
                while True:
                    try:
                        kind, cc, payload = queues[w].get(timeout=0.5)
                        break
                    except queue.Empty:
                        if not procs[w].is_alive():
                            try:  # a message flushed just before the process ended
                                kind, cc, payload = queues[w].get(timeout=1.0)
                                break
                            except queue.Empty:
                                raise InputError(
                                    f"reader process {w} for {self.path} died "
                                    f"(exit code {procs[w].exitcode})") from None
                if kind == "error":
                    raise InputError(payload)
                assert cc == c
                k = len(chunks[c])
                out = bufs[w][payload, :k].copy()
                sems[w].release()
                yield np.asarray(chunks[c], dtype=np.int64), out
        finally:
            stop.set()
            for s in sems:  # wake workers blocked on a full ring
                for _ in range(n_slots):
                    s.release()
            for pr in procs:
                pr.join(timeout=5)
                if pr.is_alive():
                    pr.terminate()
                    pr.join(timeout=5)
            for q_ in queues:
                q_.close()
                q_.cancel_join_thread()
            bufs.clear()
            for shm in shms:
                shm.close()
                shm.unlink()

    def close(self) -> None:
        """Close the master and data files (idempotent)."""
        if self._source is not None:
            self._source.close()
            self._source = None
        f = getattr(self, "_f", None)
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
            self._f = None

    def __enter__(self) -> "MasterFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "rotation" if self.geometry.is_rotation else "stills"
        return (f"MasterFile({str(self.path)!r}, layout={self.layout}, n_images={self.n_images}, "
                f"shape={self.image_shape}, dtype={self.dtype}, codec={self.codec}, {kind})")


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _no_main_reimport():
    """Start spawned reader processes without re-running the parent's ``__main__``.

    ``multiprocessing``'s spawn start method re-imports the main script in every child
    (fatal for unguarded scripts, ``python -`` or notebooks). The reader processes only need
    :mod:`jfx.io.nxmx`, so the main module's ``__spec__``/``__file__`` are hidden while the
    children are started and restored afterwards.
    """
    main = sys.modules.get("__main__")
    with _MAIN_LOCK:
        if main is None:
            yield
            return
        missing = object()
        saved = {k: main.__dict__.get(k, missing) for k in ("__spec__", "__file__")}
        main.__dict__["__spec__"] = None
        main.__dict__.pop("__file__", None)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is missing:
                    main.__dict__.pop(k, None)
                else:
                    main.__dict__[k] = v


def _has_link(g: h5py.Group, name: str) -> bool:
    try:
        return g.get(name, getlink=True) is not None
    except (KeyError, OSError):
        return False


def _get_link(f: h5py.File, path: str):
    """Link object at ``path`` (None if a component is missing)."""
    parts = [s for s in path.split("/") if s]
    g = f["/"]
    for i, name in enumerate(parts):
        if not isinstance(g, h5py.Group) or name not in g.keys():
            return None
        if i == len(parts) - 1:
            return g.get(name, getlink=True)
        lk = g.get(name, getlink=True)
        if not isinstance(lk, (h5py.HardLink, h5py.SoftLink)):
            return None
        g = g.get(name)
    return None


def _vspace_images(vspace) -> list[int] | None:
    """Image indices (dim 0) selected by a regular-hyperslab virtual-space selection."""
    try:
        if vspace.get_select_type() != h5py.h5s.SEL_HYPERSLABS or not vspace.is_regular_hyperslab():
            bounds = vspace.get_select_bounds()
            return list(range(bounds[0][0], bounds[1][0] + 1))
        start, stride, count, block = vspace.get_regular_hyperslab()
        out = []
        for c in range(count[0]):
            b0 = start[0] + c * stride[0]
            out.extend(range(b0, b0 + block[0]))
        return out
    except Exception:  # noqa: BLE001 - only used for error messages
        return None


def _space_group(v, path: Path) -> int | None:
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
                raise InputError(f"unknown space group '{s}' in /entry/sample/space_group of {path}")
            n = sg.number
    if n == 0:
        return None
    if not 1 <= n <= 230:
        raise InputError(f"invalid space group number {n} in /entry/sample/space_group of {path}")
    return n


def open_master(path: str | os.PathLike, *, check_data: bool = True) -> MasterFile:
    """Open a Jungfraujoch / NXmx master file.

    Args:
        path: the master file (``*_master.h5`` or ``.nxs``).
        check_data: verify at open time that every data file / virtual source exists,
            contains its dataset, has an available HDF5 filter and a supported pixel type
            (default). With ``False`` such problems are deferred: metadata and geometry are
            available and reading frames raises the error.
    Raises:
        InputError: one-line message naming the problem and the path.
    """
    return MasterFile(path, check_data=check_data)
