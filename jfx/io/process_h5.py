"""Writer and reader of ``<prefix>_process.h5`` (layout: /work/shared/reference/FORMATS.md).

Layout written by :func:`write_process_h5`:

* ``/entry`` (NXentry, ``definition`` = "NXmx"), ``/entry/instrument``, ``/entry/sample``,
  ``/entry/source`` copied from the input master (links — the image data and anything else
  reached through a soft/external link — are skipped; virtual datasets are copied by value),
  then overwritten with the geometry actually used: ``detector/beam_center_x``/``_y`` (px),
  ``detector/detector_distance`` and ``detector/distance`` (m), ``x/y_pixel_size`` (m),
  ``beam/incident_wavelength`` (Å) and the detector ``transformations/translation`` (origin
  of pixel (0, 0) = D·b̂ − bx·px·f̂ − by·py·ŝ, in m) with the module's fast/slow pixel
  directions.
* ``/entry/jfx/config`` (resolved YAML), ``/entry/jfx/version``, ``/entry/jfx/input``.
* ``/entry/image/{number,max,mean,n_masked,n_saturated}`` and ``/entry/MX/imageNumber``.
* ``/entry/MX`` beyond FORMATS.md: ``nPeaksIceRing`` (int32, kept spots on ice rings) and
  ``nPeaksFound`` (int32, spots found before truncation to ``max_spots``; > max_spots means
  overflow). ``/entry/azint/bin_to_azimuth_deg`` (float32, azimuth-bin centres, deg) goes
  with ``image_2d``.
* Any later-stage arrays given in ``groups`` (``MX``, ``azint``, ``reflections``,
  ``scaling``): each is a mapping of field name → array, cast to the FORMATS dtype when the
  field is a documented one (:data:`FIELD_DTYPES`); other fields are written as given.

The file is written atomically (temporary file in the output directory, then
:func:`os.replace`): on any failure or Ctrl-C no final file appears and a pre-existing output
is left untouched.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle filters for copied datasets)
import numpy as np

from jfx.io.errors import InputError
from jfx.io.h5util import atomic_path
from jfx.models.geometry import Geometry
from jfx.models.images import ImageStats


GROUPS = ("MX", "azint", "reflections", "scaling")
"""Later-stage groups under /entry that :func:`write_process_h5` accepts in ``groups``."""

GROUP_NX_CLASS = {"MX": "NXcollection", "azint": "NXcollection", "reflections": "NXreflections",
                  "scaling": "NXcollection", "image": "NXcollection", "jfx": "NXcollection"}

FIELD_DTYPES: dict[str, dict[str, Any]] = {
    "MX": {
        "imageNumber": np.int64, "nPeaks": np.int32, "peakXPosRaw": np.float32,
        "peakYPosRaw": np.float32, "peakTotalIntensity": np.float32, "peakIndexed": np.uint8,
        "strongPixels": np.int32, "imageIndexed": np.uint8, "latticeIndexed": np.float32,
        "bkgEstimate": np.float32, "resolutionEstimate": np.float32,
        "rotation_lattice": np.float64, "nPeaksIceRing": np.int32, "nPeaksFound": np.int32,
    },
    "azint": {"bin_to_q": np.float32, "image": np.float32, "image_2d": np.float32,
              "bin_to_azimuth_deg": np.float32},
    "reflections": {
        "h": np.int32, "k": np.int32, "l": np.int32, "image": np.int32,
        "predicted_x": np.float32, "predicted_y": np.float32, "predicted_phi": np.float32,
        "observed_x": np.float32, "observed_y": np.float32, "d": np.float32,
        "partiality": np.float32, "lp": np.float32, "int_sum": np.float32,
        "int_sum_var": np.float32, "int_prf": np.float32, "int_prf_var": np.float32,
        "background_mean": np.float32, "flags": np.uint32,
        "zeta": np.float32, "ewald_offset": np.float32, "image_first": np.int32,
        "image_last": np.int32,
    },
    "scaling": {"scale": np.float32, "bfactor": np.float32, "wedge_deg": np.float32,
                "mosaicity_deg": np.float32, "cc": np.float32, "rejected": np.uint8,
                "image": np.int32, "run": np.int32, "delta_cc_half": np.float32},
}

COPIED_GROUPS = ("instrument", "sample", "source")


def process_h5_path(output_prefix: str | os.PathLike) -> Path:
    """``<prefix>_process.h5`` for an output prefix."""
    return Path(f"{os.fspath(output_prefix)}_process.h5")


# --------------------------------------------------------------------------- copying
def _copy_tree(src: h5py.Group, dst: h5py.Group, skipped: list[str]) -> None:
    """Copy attributes, groups and datasets of ``src`` into ``dst``; skip soft/external links."""
    for k, v in src.attrs.items():
        dst.attrs[k] = v
    for name in src:
        link = src.get(name, getlink=True)
        path = f"{src.name}/{name}"
        if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
            skipped.append(path)
            continue
        try:
            obj = src[name]
        except (KeyError, OSError):
            skipped.append(path)
            continue
        if isinstance(obj, h5py.Group):
            _copy_tree(obj, dst.require_group(name), skipped)
        elif isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                try:
                    data = obj[()]
                except OSError:
                    skipped.append(path)
                    continue
                d = dst.create_dataset(name, data=data)
                for k, a in obj.attrs.items():
                    d.attrs[k] = a
            else:
                src.copy(obj, dst, name=name)


def _set(group: h5py.Group, name: str, value: Any, **attrs: Any) -> h5py.Dataset:
    if name in group or group.get(name, getlink=True) is not None:
        del group[name]
    d = group.create_dataset(name, data=value)
    for k, a in attrs.items():
        d.attrs[k] = a
    return d


def _write_geometry(entry: h5py.Group, geometry: Geometry) -> None:
    det = geometry.detector
    inst = entry.require_group("instrument")
    inst.attrs.setdefault("NX_class", "NXinstrument")
    dg = inst.require_group("detector")
    dg.attrs.setdefault("NX_class", "NXdetector")
    bx, by = (float(v) for v in np.asarray(det.beam_center_px))
    dist_m = float(det.distance_mm) * 1e-3
    px_m, py_m = det.pixel_size_mm[0] * 1e-3, det.pixel_size_mm[1] * 1e-3
    _set(dg, "beam_center_x", bx, units="pixel")
    _set(dg, "beam_center_y", by, units="pixel")
    _set(dg, "detector_distance", dist_m, units="m")
    _set(dg, "distance", dist_m, units="m")
    _set(dg, "x_pixel_size", px_m, units="m")
    _set(dg, "y_pixel_size", py_m, units="m")
    bg = inst.require_group("beam")
    bg.attrs.setdefault("NX_class", "NXbeam")
    _set(bg, "incident_wavelength", float(geometry.beam.wavelength_A), units="angstrom")

    f = np.asarray(det.fast_axis, dtype=np.float64)
    s = np.asarray(det.slow_axis, dtype=np.float64)
    b = np.asarray(geometry.beam.direction, dtype=np.float64)
    origin_m = dist_m * b - bx * px_m * f - by * py_m * s
    norm = float(np.linalg.norm(origin_m))
    tg = dg.require_group("transformations")
    tg.attrs.setdefault("NX_class", "NXtransformations")
    _set(tg, "translation", norm, units="m", transformation_type="translation",
         vector=origin_m / norm if norm > 0 else np.array([0.0, 0.0, 1.0]), depends_on=".")
    _set(dg, "depends_on", "/entry/instrument/detector/transformations/translation")
    # One detector module whose pixel directions hang off the translation (as the
    # Jungfraujoch writer does); copied module groups are replaced.
    for name in list(dg.keys()):
        obj = dg.get(name)
        if isinstance(obj, h5py.Group) and _nx_class(obj) == "NXdetector_module":
            del dg[name]
    mod = dg.create_group("module")
    mod.attrs["NX_class"] = "NXdetector_module"
    ny, nx = det.shape
    mod.create_dataset("data_origin", data=np.array([0, 0], dtype=np.int32))
    mod.create_dataset("data_size", data=np.array([ny, nx], dtype=np.int32))
    mod.create_dataset("data_stride", data=np.array([1, 1], dtype=np.int32))
    trans = "/entry/instrument/detector/transformations/translation"
    _set(mod, "fast_pixel_direction", px_m, units="m", transformation_type="translation",
         vector=f, offset=np.zeros(3), depends_on=trans)
    _set(mod, "slow_pixel_direction", py_m, units="m", transformation_type="translation",
         vector=s, offset=np.zeros(3), depends_on=trans)


def _nx_class(obj) -> str:
    v = obj.attrs.get("NX_class", "")
    return v.decode() if isinstance(v, bytes) else str(v)


def _open_readonly(path: Path) -> h5py.File:
    """Open ``path`` read-only, matching either file-locking setting of an already open id."""
    try:
        return h5py.File(path, "r")
    except OSError:
        return h5py.File(path, "r", locking=False)


def _write_group(entry: h5py.Group, name: str, fields: Mapping[str, Any]) -> None:
    if name not in GROUPS:
        raise ValueError(f"unknown output group {name!r}; expected one of {GROUPS}")
    g = entry.require_group(name)
    g.attrs["NX_class"] = GROUP_NX_CLASS[name]
    dtypes = FIELD_DTYPES[name]
    for key, value in fields.items():
        if isinstance(value, Mapping):  # a scalar dataset carrying the mapping as attributes
            if key in g:
                del g[key]
            d = g.create_dataset(key, data=np.int8(0))
            for k, v in value.items():
                d.attrs[k] = v
            continue
        arr = np.asarray(value)
        if key in dtypes:
            arr = arr.astype(dtypes[key], copy=False)
        kw: dict[str, Any] = {}
        if arr.ndim >= 1 and arr.size > 4096:
            kw = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        if key in g:
            del g[key]
        g.create_dataset(key, data=arr, **kw)


def write_process_h5(
    path: str | os.PathLike,
    *,
    master_path: str | os.PathLike,
    geometry: Geometry,
    config_yaml: str,
    version: str,
    image: ImageStats,
    groups: Mapping[str, Mapping[str, Any]] | None = None,
    _after_create=None,
) -> Path:
    """Write ``<prefix>_process.h5`` atomically.

    Args:
        path: final output path.
        master_path: the input master file (its instrument/sample/source are copied).
        geometry: the geometry actually used (written over the copied values).
        config_yaml: resolved configuration as YAML text (``/entry/jfx/config``).
        version: jfx version string.
        image: per-image statistics (``/entry/image``, ``/entry/MX/imageNumber``).
        groups: later-stage arrays, ``{"MX"|"azint"|"reflections"|"scaling": {field: array}}``.
        _after_create: test hook called with the open temporary file (failure injection).

    Returns:
        The final path.
    """
    path = Path(path)
    master_path = Path(master_path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as out:
            out.attrs["creator"] = f"jfx {version}"
            out.attrs["default"] = "entry"
            entry = out.create_group("entry")
            skipped: list[str] = []
            with _open_readonly(master_path) as src:
                if "entry" in src:
                    for k, v in src["entry"].attrs.items():
                        entry.attrs[k] = v
                    for name in COPIED_GROUPS:
                        if name in src["entry"] and isinstance(
                            src["entry"].get(name, getlink=True), h5py.HardLink
                        ):
                            _copy_tree(src["entry"][name], entry.require_group(name), skipped)
            entry.attrs["NX_class"] = "NXentry"
            _set(entry, "definition", "NXmx")
            _write_geometry(entry, geometry)
            for name, cls in (("sample", "NXsample"), ("source", "NXsource")):
                entry.require_group(name).attrs.setdefault("NX_class", cls)
            jg = entry.create_group("jfx")
            jg.attrs["NX_class"] = "NXcollection"
            jg.create_dataset("config", data=config_yaml)
            jg.create_dataset("version", data=version)
            jg.create_dataset("input", data=str(master_path.resolve()))
            ig = entry.create_group("image")
            ig.attrs["NX_class"] = "NXcollection"
            for f in dataclasses.fields(ImageStats):
                ig.create_dataset(f.name, data=getattr(image, f.name))
            mx_fields = dict((groups or {}).get("MX", {}))
            mx_fields["imageNumber"] = image.number
            _write_group(entry, "MX", mx_fields)
            for name, fields in (groups or {}).items():
                if name != "MX":
                    _write_group(entry, name, fields)
            if _after_create is not None:
                _after_create(out)
    return path


# --------------------------------------------------------------------------- reading
@dataclasses.dataclass(frozen=True)
class ProcessFile:
    """Contents of a ``_process.h5`` file (host-side numpy).

    Attributes:
        path: the file.
        config_yaml: ``/entry/jfx/config``.
        version: ``/entry/jfx/version``.
        input: ``/entry/jfx/input`` (master-file path).
        beam_center_px: (bx, by) px; ``detector_distance_m`` (m); ``wavelength_A`` (Å).
        image: per-image statistics, or ``None`` if absent.
        groups: ``{"MX"|"azint"|"reflections"|"scaling": {field: array}}`` for those present.
    """

    path: Path
    config_yaml: str
    version: str
    input: str
    beam_center_px: tuple[float, float]
    detector_distance_m: float
    wavelength_A: float
    image: ImageStats | None
    groups: dict[str, dict[str, np.ndarray]]

    @property
    def has_reflections(self) -> bool:
        return "reflections" in self.groups and len(self.groups["reflections"]) > 0


def _str(d: h5py.Dataset) -> str:
    v = d[()]
    return v.decode() if isinstance(v, bytes) else str(v)


def read_process_h5(path: str | os.PathLike) -> ProcessFile:
    """Read a ``_process.h5`` file written by :func:`write_process_h5`.

    Raises:
        InputError: missing file, not HDF5, or not a jfx ``_process.h5`` (one-line message).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputError(f"not an HDF5 file: {path}") from None
    with f:
        need = ("entry/jfx/config", "entry/instrument/detector/beam_center_x",
                "entry/instrument/detector/beam_center_y",
                "entry/instrument/detector/detector_distance",
                "entry/instrument/beam/incident_wavelength")
        for p in need:
            if p not in f:
                raise InputError(f"{path} is not a jfx _process.h5 file (missing /{p})")
        try:
            det = f["entry/instrument/detector"]
            image = None
            if "entry/image" in f:
                ig = f["entry/image"]
                image = ImageStats(*(ig[fl.name][()] for fl in dataclasses.fields(ImageStats)))
            groups = {}
            for name in GROUPS:
                if name in f["entry"]:
                    groups[name] = {k: v[()] for k, v in f["entry"][name].items()
                                    if isinstance(v, h5py.Dataset)}
            return ProcessFile(
                path=path,
                config_yaml=_str(f["entry/jfx/config"]),
                version=_str(f["entry/jfx/version"]) if "entry/jfx/version" in f else "",
                input=_str(f["entry/jfx/input"]) if "entry/jfx/input" in f else "",
                beam_center_px=(float(det["beam_center_x"][()]), float(det["beam_center_y"][()])),
                detector_distance_m=float(det["detector_distance"][()]),
                wavelength_A=float(f["entry/instrument/beam/incident_wavelength"][()]),
                image=image,
                groups=groups,
            )
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"cannot read {path}: {' '.join(str(e).split())}") from None
