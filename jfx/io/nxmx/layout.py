"""Image-data layout of an NXmx master file: which files hold the frames, and their checks.

:func:`discover_layout` inspects ``/entry/data`` and returns a :class:`DataLayout`:

* ``"legacy"``: ``/entry/data/data_000001``, ``data_000002``, … external links to
  ``<name>_data_NNNNNN.h5:/entry/data/data`` (or one external link ``/entry/data/data``);
  images are concatenated in link order (names sorted). Link targets are resolved against
  the master's directory.
* ``"vds"``: ``/entry/data/data`` is a virtual dataset. Every source file is checked to
  exist, to contain its dataset (following one external link, the DLS layout) and to be
  large enough (HDF5 silently returns fill values otherwise).
* ``"single"``: ``/entry/data/data`` is a real dataset in the master file.

Data files opened for validation are closed again; frames are read later by
:class:`jfx.io.frame_reader.FrameReader` from the plain-dict ``spec`` built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from jfx.io.errors import InputError
from jfx.io.h5util import codec_name, missing_filters, open_problem, read_scalar
from jfx.io.nxmx.metadata import SUPPORTED_DTYPES


@dataclass(frozen=True)
class DataLayout:
    """Where and how the images of a master file are stored.

    Attributes:
        kind: "legacy" | "vds" | "single".
        n_images: number of images; image_shape: (ny, nx) pixels; dtype: pixel dtype.
            When the data are unusable (``error`` set) the shape falls back to
            ``detectorSpecific`` (``nimages``, ``y/x_pixels_in_detector``) and the dtype to
            int32 when unknown.
        codec: "bslz4" | "bszstd" | "none" | other filter names (first data dataset).
        error: first problem with the data (only with ``check_data=False``; otherwise it
            is raised), None when the frames are readable.
        spec: :class:`~jfx.io.frame_reader.FrameReader` specification (plain dict: ``vds``,
            ``segments`` [(file, dataset, first image, count)], ``shape``, ``dtype`` str,
            ``vds_files`` [(image indices, file)]); None when ``error`` is set.
    """

    kind: str
    n_images: int
    image_shape: tuple[int, int]
    dtype: np.dtype
    codec: str
    error: str | None
    spec: dict | None


class _Scan:
    """Findings while walking ``/entry/data`` (shared by the layout branches)."""

    def __init__(self, f: h5py.File, path: Path):
        self.f, self.path = f, path
        self.errors: list[str] = []
        self.segments: list[tuple[str, str, int, int]] = []
        self.vds_files: list[tuple[tuple[int, ...], str]] = []
        self.dsets: list[h5py.Dataset] = []
        self.opened: list[h5py.File] = []  # data files opened for validation
        self.shape3: tuple[int, ...] | None = None
        self.dtype = None
        self.kind = ""

    def open_data_file(self, target: Path) -> h5py.File | str:
        """The opened data file, or an error message."""
        try:
            df = h5py.File(target, "r")
        except OSError as e:
            return open_problem("data file", target, e)
        self.opened.append(df)
        return df

    def close_opened(self) -> None:
        self.dsets.clear()
        for df in self.opened:
            try:
                df.close()
            except Exception:  # noqa: BLE001
                pass
        self.opened.clear()


def discover_layout(f: h5py.File, path: Path, check_data: bool = True) -> DataLayout:
    """The :class:`DataLayout` of the open master file ``f`` (at absolute ``path``).

    Raises:
        InputError: no image data at all; with ``check_data`` also the first problem with
            the data files (missing file or dataset, inconsistent shapes or pixel types,
            unsupported pixel type, unavailable HDF5 filter, 0 images).
    """
    g = f.get("entry/data")
    if not isinstance(g, h5py.Group):
        raise InputError(f"no image data (/entry/data missing): {path}")
    sc = _Scan(f, path)
    try:
        link = g.get("data", getlink=True) if "data" in g or _has_link(g, "data") else None
        if link is not None and not isinstance(link, h5py.ExternalLink):
            _scan_dataset(sc, g)
        else:
            _scan_links(sc, g, link)
        _check_data(sc)
        codec = codec_name(sc.dsets[0]) if sc.dsets else "none"
    finally:
        # data files opened for validation: close (the frame reader reopens lazily)
        sc.close_opened()
    errors, shape3, dtype = sc.errors, sc.shape3, sc.dtype
    data_error = None
    if errors:
        if check_data:
            raise InputError(errors[0])
        data_error = errors[0]
    # shape / dtype, falling back to detectorSpecific when data are unavailable
    if errors and sc.kind == "legacy":
        shape3 = None  # some data files unusable: image count unknown from the data
    if shape3 is None or len(shape3) != 3:
        ds_ = f.get("entry/instrument/detector/detectorSpecific")
        try:
            ny = int(read_scalar(ds_["y_pixels_in_detector"]))
            nx = int(read_scalar(ds_["x_pixels_in_detector"]))
            n = int(read_scalar(ds_["nimages"]))
        except (TypeError, KeyError, ValueError):
            raise InputError(errors[0] if errors else f"no image data in {path}") from None
        shape3 = (n, ny, nx)
    image_shape = (int(shape3[1]), int(shape3[2]))
    dt = np.dtype(dtype) if dtype is not None else np.dtype("int32")
    spec = None
    if not data_error:
        spec = dict(vds=sc.kind == "vds", segments=sc.segments, shape=image_shape,
                    dtype=dt.str, vds_files=sc.vds_files)
    return DataLayout(kind=sc.kind, n_images=int(shape3[0]), image_shape=image_shape,
                      dtype=dt, codec=codec, error=data_error, spec=spec)


def _scan_dataset(sc: _Scan, g: h5py.Group) -> None:
    """``/entry/data/data`` is a dataset in the master file: "vds" or "single"."""
    p = sc.path
    obj = g.get("data")
    if obj is None:
        raise InputError(f"no image data (/entry/data/data is a dangling link): {p}")
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"no image data (/entry/data/data is not a dataset): {p}")
    sc.shape3, sc.dtype = obj.shape, obj.dtype
    sc.segments.append((str(p), obj.name, 0, obj.shape[0] if obj.ndim else 0))
    if not obj.is_virtual:
        sc.kind = "single"
        sc.dsets.append(obj)
        return
    sc.kind = "vds"
    for vs in obj.virtual_sources():
        src_ds, fname, err = _check_vds_source(sc, vs)
        if err:
            sc.errors.append(err)
            continue
        sc.dsets.append(src_ds)
        idx = _vspace_images(vs.vspace)
        if idx is not None:
            sc.vds_files.append((tuple(idx), fname))
    if not obj.virtual_sources():
        sc.errors.append(f"virtual dataset /entry/data/data has no sources in {p}")


def _scan_links(sc: _Scan, g: h5py.Group, link) -> None:
    """"legacy": ``data`` external link and/or ``data_NNNNNN`` links, concatenated."""
    p = sc.path
    legacy_keys = sorted(k for k in g.keys() if k.startswith("data_") and k[5:].isdigit())
    links = []
    if isinstance(link, h5py.ExternalLink):
        links.append(("data", link))
    for k in legacy_keys:
        links.append((k, g.get(k, getlink=True)))
    if not links:
        raise InputError(f"no image data in /entry/data (no 'data' or 'data_NNNNNN'): {p}")
    sc.kind = "legacy"
    errors = sc.errors
    start = 0
    shapes = []
    for name, lk in links:
        if isinstance(lk, h5py.ExternalLink):
            target = _ext_target(p, lk)
            if not target.exists():
                errors.append(f"missing data file {target} (linked from /entry/data/{name} in {p})")
                continue
            df = sc.open_data_file(target)
            if isinstance(df, str):
                errors.append(df)
                continue
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
            errors.append(f"image data must be 3-D (n, ny, nx); {fname}:{dpath} has shape "
                          f"{ds.shape}")
            continue
        shapes.append((fname, ds.shape[1:]))
        if shapes[0][1] != ds.shape[1:]:
            errors.append(
                f"inconsistent frame shapes: {fname} has {ds.shape[1:]}, "
                f"{shapes[0][0]} has {shapes[0][1]}")
            continue
        if sc.dtype is not None and ds.dtype != sc.dtype:
            errors.append(f"inconsistent pixel types: {fname} is {ds.dtype}, expected {sc.dtype}")
            continue
        sc.dtype = ds.dtype
        sc.segments.append((fname, dpath, start, int(ds.shape[0])))
        sc.dsets.append(ds)
        start += ds.shape[0]
    if sc.segments:
        sc.shape3 = (start,) + tuple(shapes[0][1])


def _check_data(sc: _Scan) -> None:
    """Shape, pixel type, filters and image count of the data found."""
    p, shape3, dtype, errors = sc.path, sc.shape3, sc.dtype, sc.errors
    if shape3 is not None and len(shape3) != 3:
        errors.append(f"image data must be 3-D (n, ny, nx); got shape {shape3} in {p}")
    if dtype is not None and np.dtype(dtype) not in SUPPORTED_DTYPES:
        errors.append(
            f"unsupported pixel data type {np.dtype(dtype)} (supported: int16, int32, "
            f"uint16, uint32) in {p}")
    for ds in sc.dsets:
        miss = missing_filters(ds)
        if miss:
            errors.append(f"HDF5 filter {', '.join(miss)} not available (needed by "
                          f"{ds.file.filename}:{ds.name})")
            break
    if shape3 is not None and len(shape3) == 3 and shape3[0] == 0 and not errors:
        errors.append(f"no image data (0 images) in {p}")


def _check_vds_source(sc: _Scan, vs) -> tuple[h5py.Dataset | None, str, str | None]:
    """(source dataset, file name, None) of a virtual source, or (None, file, error)."""
    p = sc.path
    fname = vs.file_name
    if fname == ".":
        src_file, sf = p, sc.f
    else:
        src_file = Path(fname) if Path(fname).is_absolute() else p.parent / fname
        if not src_file.exists():
            return None, str(src_file), (
                f"missing data file {src_file} (source of virtual dataset "
                f"/entry/data/data in {p})")
        sf = sc.open_data_file(src_file)
        if isinstance(sf, str):
            return None, str(src_file), sf
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


def _ext_target(master: Path, link: h5py.ExternalLink) -> Path:
    """File named by an external link of the master, relative to the master's directory."""
    fn = Path(link.filename)
    return fn if fn.is_absolute() else master.parent / fn


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
