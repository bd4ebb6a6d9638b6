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
* ``/entry/image/{number,max,mean,n_masked,n_saturated,unreadable}`` (unreadable: uint8) and
  ``/entry/MX/imageNumber``.
* ``/entry/MX`` beyond FORMATS.md: ``nPeaksIceRing`` (int32, kept spots on ice rings) and
  ``nPeaksFound`` (int32, spots found before truncation to ``max_spots``; > max_spots means
  overflow). ``/entry/azint/bin_to_azimuth_deg`` (float32, azimuth-bin centres, deg) goes
  with ``image_2d``.
* The later-stage groups built from the pipeline state by :func:`state_groups` (the one
  table of ``/entry/MX``, ``/entry/azint``, ``/entry/reflections`` and ``/entry/scaling``
  field names), each field cast to its FORMATS dtype (:data:`FIELD_DTYPES`).

:func:`read_process_h5` reads the file back; its ``reflections`` (a
:class:`jfx.models.reflections.Reflections`) and crystal fields feed ``jfjoch_scale``.

* ``/entry/start_time``, ``/entry/end_time``: the processing run's start and end (ISO 8601
  with the UTC offset, e.g. ``2026-12-04T14:05:09+00:00``).
* ``/entry/per_image`` (NXdata, ``/entry@default``): spots per image (``nPeaks``, hard link
  to ``/entry/MX/nPeaks``) against the image number (``image``, link to
  ``/entry/image/number``), with ``imageIndexed`` as an auxiliary signal, so that NeXus
  viewers (h5web, silx, NeXpy) open the file on a plot.
* ``/entry/reflections/flags@bits``: one line per :class:`ReflectionFlag` bit
  (``<bit> <NAME>: <meaning>``, :data:`FLAG_MEANINGS`).

The file is built in memory (:func:`process_h5_image`: h5py's file-object driver on an
:class:`io.BytesIO`) and its bytes written with plain Python I/O through an output set
(:mod:`jfx.io.output_set`): HDF5 itself crashes (a segmentation fault after hundreds of
error lines from h5py's object deallocation) once a write has failed with a full disk; in
memory HDF5 never writes to disk, and a full disk is one clean ``OSError``. On any failure
or Ctrl-C no final file appears and a pre-existing output is left untouched.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle filters for copied datasets)
import numpy as np

from jfx.io.errors import InputError
from jfx.io.output_set import OutputSet, write_one
from jfx.models.geometry import Geometry
from jfx.models.images import ImageStats
from jfx.models.reflections import ReflectionFlag, Reflections

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
        "peakLattice": np.int8, "latticeIndexedAll": np.float64, "unit_cell": np.float64,
        "space_group": np.int32, "bandwidth_fwhm": np.float64, "scan_start_deg": np.float64,
        "scan_increment_deg": np.float64, "scan_varying_edges": np.float64,
        "scan_varying_lattice": np.float64, "pixelrefine_status": np.int8,
        "pixelrefine_lattice": np.float64,
    },
    "azint": {"bin_to_q": np.float32, "image": np.float32, "image_2d": np.float32,
              "bin_to_azimuth_deg": np.float32},
    "reflections": {
        "h": np.int32, "k": np.int32, "l": np.int32, "image": np.int32,
        "predicted_x": np.float32, "predicted_y": np.float32, "predicted_phi": np.float32,
        "observed_x": np.float32, "observed_y": np.float32, "d": np.float32,
        "partiality": np.float32, "lp": np.float32, "int_sum": np.float32,
        "int_sum_var": np.float32, "int_prf": np.float32, "int_prf_var": np.float32,
        "background_mean": np.float32, "flags": np.uint32, "int_prf_var_bg": np.float32,
        "zeta": np.float32, "ewald_offset": np.float32, "image_first": np.int32,
        "image_last": np.int32, "qe": np.float32,
    },
    "scaling": {"scale": np.float32, "bfactor": np.float32, "wedge_deg": np.float32,
                "mosaicity_deg": np.float32, "cc": np.float32, "rejected": np.uint8,
                "image": np.int32, "run": np.int32, "delta_cc_half": np.float32},
}

COPIED_GROUPS = ("instrument", "sample", "source")

FLAG_MEANINGS = {
    "PREDICTED": "row comes from the prediction",
    "OBSERVED": "an indexed spot with this hkl was matched (observed_x/y valid)",
    "INDEXED": "the matched spot was assigned this hkl by indexing",
    "INTEGRATED_SUM": "int_sum / int_sum_var valid",
    "INTEGRATED_PRF": "int_prf / int_prf_var valid",
    "OVERLOADED": "saturated pixel in the integration region (left out of scaling)",
    "MASKED_PIXEL": "masked or invalid pixel in the signal disc",
    "OVERLAP": "signal disc or background annulus overlaps another reflection's disc",
    "OUTLIER": "rejected as an outlier",
    "EDGE": "signal disc crosses the detector edge",
    "BAD_BACKGROUND": "too few background pixels",
    "PARTIAL": "rotation: recorded fraction < 0.9 (includes reflections centred outside "
               "the processed images)",
    "MASKED_FRACTION": "signal disc masked beyond integrate.max_masked_fraction (left out "
                       "of scaling)",
}
"""Meaning of each :class:`ReflectionFlag` bit, written as ``/entry/reflections/flags@bits``."""

DEFAULT_PLOT = "per_image"
"""The NXdata group under /entry that ``/entry@default`` names."""


def flag_bits_text() -> str:
    """``/entry/reflections/flags@bits``: ``"<bit> <NAME>: <meaning>"`` lines."""
    return "\n".join(f"{int(f).bit_length() - 1} {f.name}: {FLAG_MEANINGS[f.name]}"
                     for f in ReflectionFlag)


def now_iso(ago_s: float = 0.0) -> str:
    """The local time ``ago_s`` seconds ago (default: now), ISO 8601 with its UTC offset."""
    t = datetime.datetime.now().astimezone() - datetime.timedelta(seconds=ago_s)
    return t.isoformat(timespec="seconds")


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
        d = g.create_dataset(key, data=arr, **kw)
        if name == "reflections" and key == "flags":
            d.attrs["bits"] = flag_bits_text()


def _write_default_plot(entry: h5py.Group) -> None:
    """``/entry/per_image`` (NXdata): spots per image against the image number (hard links,
    no copy), the default plot of the file."""
    if "image/number" not in entry or "MX/nPeaks" not in entry:
        return
    pg = entry.create_group(DEFAULT_PLOT)
    pg.attrs["NX_class"] = "NXdata"
    pg.attrs["signal"] = "nPeaks"
    pg.attrs["axes"] = np.array(["image"], dtype=h5py.string_dtype())
    pg["image"] = entry["image/number"]
    pg["image"].attrs["long_name"] = "image number"
    pg["nPeaks"] = entry["MX/nPeaks"]
    pg["nPeaks"].attrs["long_name"] = "spots per image"
    if "MX/imageIndexed" in entry:
        pg["imageIndexed"] = entry["MX/imageIndexed"]
        pg["imageIndexed"].attrs["long_name"] = "image indexed (1) or not (0)"
        pg.attrs["auxiliary_signals"] = np.array(["imageIndexed"], dtype=h5py.string_dtype())
    entry.attrs["default"] = DEFAULT_PLOT


def process_h5_image(
    *,
    master_path: str | os.PathLike,
    geometry: Geometry,
    config_yaml: str,
    version: str,
    image: ImageStats,
    groups: Mapping[str, Mapping[str, Any]] | None = None,
    start_time: str | None = None,
    end_time: str | None = None,
    _after_create=None,
) -> memoryview:
    """The bytes of a ``_process.h5`` file, built in memory (an :class:`io.BytesIO` through
    h5py's file-object driver: HDF5 writes nothing to disk, so a full disk can never reach
    it). Arguments: :func:`write_process_groups`. Memory: about the file size on top of the
    inputs (the HDF5 core driver's ``get_file_image`` would need twice that:
    experiments/output_set/core_driver_cost.py)."""
    master_path = Path(master_path)
    end_time = end_time or now_iso()
    buf = io.BytesIO()  # h5py's file-object driver: HDF5 writes into memory, never to disk
    with h5py.File(buf, "w") as out:
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
        _set(entry, "start_time", start_time or end_time)
        _set(entry, "end_time", end_time)
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
            v = np.asarray(getattr(image, f.name))
            ig.create_dataset(f.name, data=v.astype(np.uint8) if v.dtype == bool else v)
        mx_fields = dict((groups or {}).get("MX", {}))
        mx_fields["imageNumber"] = image.number
        _write_group(entry, "MX", mx_fields)
        for group, fields in (groups or {}).items():
            if group != "MX":
                _write_group(entry, group, fields)
        _write_default_plot(entry)
        if _after_create is not None:
            _after_create(out)
    return buf.getbuffer()


def write_process_groups(path: str | os.PathLike, *, outputs: OutputSet | None = None,
                         **content: Any) -> Path:
    """Write ``<prefix>_process.h5`` from output groups already named
    (:func:`write_process_h5` builds them from a :class:`ProcessState`).

    Args:
        path: final output path.
        outputs: the output set the file joins (moved into place with the other outputs of
            the prefix at its commit); None: written on its own, atomically.
        content: the keywords of :func:`process_h5_image`:
            master_path: the input master file (its instrument/sample/source are copied).
            geometry: the geometry actually used (written over the copied values).
            config_yaml: resolved configuration as YAML text (``/entry/jfx/config``).
            version: jfx version string.
            image: per-image statistics (``/entry/image``, ``/entry/MX/imageNumber``).
            groups: later-stage arrays, ``{"MX"|"azint"|"reflections"|"scaling": {field: array}}``.
            start_time, end_time: ISO 8601 times of the processing run (default: now, both).
            _after_create: test hook called with the open in-memory file (failure injection).

    Returns:
        The final path.

    Raises:
        ProcessingError: the file cannot be written (one line; disk full: the size).
    """
    path = Path(path)
    data = process_h5_image(**content)
    if outputs is not None:
        outputs.add(path, data)
    else:
        write_one(path, data)
    return path


# --------------------------------------------------------------------------- state → fields
def _mx_fields(state: Any) -> dict[str, Any]:
    """``/entry/MX`` of a pipeline state (spots, indexing, crystal fields)."""
    sp, st = state.spots, state.spot_stats
    valid = np.asarray(sp.valid)
    n, n_spots = valid.shape
    mx: dict[str, Any] = {
        "nPeaks": valid.sum(axis=1),
        "peakXPosRaw": np.where(valid, sp.x_px, np.nan),
        "peakYPosRaw": np.where(valid, sp.y_px, np.nan),
        "peakTotalIntensity": np.where(valid, sp.intensity, np.nan),
        "strongPixels": sp.strong_pixels, "nPeaksFound": sp.n_found,
        "bkgEstimate": st.bkg_estimate, "resolutionEstimate": st.resolution_estimate,
        "nPeaksIceRing": st.n_ice,
        "peakIndexed": np.zeros((n, n_spots), np.uint8),
        "imageIndexed": np.zeros(n, np.uint8),
        "latticeIndexed": np.full((n, 9), np.nan),
    }
    ix = state.indexing
    if ix is None:
        return mx
    lid = np.asarray(ix.lattice_id)
    mx["imageIndexed"] = ix.indexed.astype(np.uint8)
    mx["peakIndexed"] = (lid == 0) & ix.indexed[:, None]
    mx["peakLattice"] = np.where(ix.indexed[:, None], lid, -1)
    mx["latticeIndexed"] = state.image_lattices().reshape(n, 9)
    if ix.basis.shape[1] > 1:
        mx["latticeIndexedAll"] = ix.basis.reshape(n, ix.basis.shape[1], 9)
    b0 = state.rotation_basis0()
    if b0 is not None:
        mx["rotation_lattice"] = b0.reshape(9)
    r = state.refinement
    if r is not None and r.scan_varying_edges is not None:
        mx["scan_varying_edges"] = r.scan_varying_edges
        mx["scan_varying_lattice"] = np.asarray(r.scan_varying_basis).reshape(-1, 9)
    mx.update(_pixelrefine_fields(state, n))
    if state.reflections is not None:
        geo = state.final_geometry
        mx["unit_cell"] = state.unit_cell if state.unit_cell is not None else np.full(6, np.nan)
        mx["space_group"] = state.space_group or 0
        mx["bandwidth_fwhm"] = float(geo.beam.bandwidth_fwhm)
        gon = geo.goniometer
        if geo.is_rotation and gon is not None:
            mx["scan_start_deg"] = np.degrees(float(gon.start_rad))
            mx["scan_increment_deg"] = np.degrees(float(gon.increment_rad))
            mx["rotation_axis"] = np.asarray(gon.axis, np.float64)
            mx["beam_direction"] = np.asarray(geo.beam.direction, np.float64)
    return mx


def _pixelrefine_fields(state: Any, n: int) -> dict[str, Any]:
    """``/entry/MX/pixelrefine_*`` of ``-r pixelrefine`` (docs/pixelrefine.md): per image
    (n,), ``pixelrefine_status`` (int8 :data:`jfx.pixelrefine.fit.STATUS` code, −1 = not
    fitted), ``pixelrefine_lattice`` (n, 9) refined lattice, and for every refined
    parameter ``pixelrefine_<name>`` with its standard uncertainty
    ``pixelrefine_<name>_sigma`` (float64, NaN where not fitted; ``cell`` (n, 6)); the
    pilot's population medians as scalars ``pixelrefine_population_<name>``."""
    t = getattr(state, "pixel_refinement", None)
    if t is None:
        return {}
    pos = np.asarray(t.images)
    out: dict[str, Any] = {}
    st = np.full(n, -1, np.int8)
    st[pos] = t.status
    out["pixelrefine_status"] = st
    lat = np.full((n, 9), np.nan)
    lat[pos] = np.asarray(t.basis).reshape(-1, 9)
    out["pixelrefine_lattice"] = lat
    for name, v in t.population.items():
        out[f"pixelrefine_population_{name}"] = np.float64(v)
    for tag, d in (("", t.values), ("_sigma", t.sigmas)):
        for name, v in d.items():
            v = np.asarray(v, np.float64)
            a = np.full((n,) + v.shape[1:], np.nan)
            a[pos] = v
            out[f"pixelrefine_{name}{tag}"] = a
    return out


def _azint_fields(az: Any) -> dict[str, Any]:
    out = {"bin_to_q": az.bin_to_q, "image": az.profile}
    if az.profile_2d is not None:
        out["image_2d"] = az.profile_2d
        out["bin_to_azimuth_deg"] = az.bin_to_azimuth_deg
    return out


REFLECTION_FIELDS = {
    "image": "image", "image_first": "image_first", "image_last": "image_last",
    "predicted_x": "predicted_x", "predicted_y": "predicted_y",
    "predicted_phi": "predicted_phi_deg", "observed_x": "observed_x",
    "observed_y": "observed_y", "d": "d_A", "partiality": "partiality", "lp": "lp",
    "zeta": "zeta", "ewald_offset": "ewald_offset_invA", "int_sum": "int_sum",
    "int_sum_var": "int_sum_var", "int_prf": "int_prf", "int_prf_var": "int_prf_var",
    "background_mean": "background_mean", "flags": "flags", "int_prf_var_bg": "int_prf_var_bg",
    "qe": "qe",
}
"""``/entry/reflections`` field → :class:`Reflections` attribute (plus ``h``, ``k``, ``l``
from ``hkl``)."""

REQUIRED_REFLECTION_FIELDS = ("h", "k", "l", "image", "d", "lp", "partiality", "int_sum",
                              "int_sum_var", "flags")
"""Fields a ``_process.h5`` must have for ``jfjoch_scale``."""


def _reflection_fields(refl: Any) -> dict[str, Any]:
    hkl = np.asarray(refl.hkl)
    out = {"h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2]}
    out.update({name: getattr(refl, attr) for name, attr in REFLECTION_FIELDS.items()})
    return out


def _scaling_fields(res: Any) -> dict[str, Any]:
    """``/entry/scaling``: per-image arrays, the statistics table and the error model."""
    im = res.images
    out: dict[str, Any] = {k: im[k] for k in ("scale", "bfactor", "wedge_deg", "mosaicity_deg",
                                             "cc", "rejected", "image", "run",
                                             "delta_cc_half")}
    a, b = res.error_model
    out["statistics"] = res.statistics.as_records()
    out["error_model"] = {"a": a, "b": b, "form": "sigma'^2 = a^2 (sigma^2 + (b I)^2)"}
    out["space_group"] = res.space_group
    out["unit_cell"] = res.cell
    out["suggested_d_min"] = np.float64(res.statistics.suggested_d_min_A)  # Å, NaN: none
    out["n_overloaded"] = np.int64(res.n_overloaded)
    out["n_masked"] = np.int64(res.n_masked)
    return out


def state_groups(state: Any) -> dict[str, dict[str, Any]]:
    """The output groups of a :class:`jfx.pipeline.state.ProcessState` (field name → array):
    the only place that maps pipeline results to ``_process.h5`` names."""
    groups: dict[str, dict[str, Any]] = {"MX": _mx_fields(state)}
    if state.azint is not None:
        groups["azint"] = _azint_fields(state.azint)
    if state.reflections is not None:
        groups["reflections"] = _reflection_fields(state.reflections)
    if state.scaling is not None:
        groups["scaling"] = _scaling_fields(state.scaling)
    return groups


def write_process_h5(path: str | os.PathLike, state: Any, *, master_path: str | os.PathLike,
                     config_yaml: str, version: str, start_time: str | None = None,
                     end_time: str | None = None, outputs: OutputSet | None = None,
                     _after_create=None) -> Path:
    """Write ``<prefix>_process.h5`` of a pipeline state (the final geometry, the
    per-image statistics and :func:`state_groups`); arguments: :func:`write_process_groups`."""
    return write_process_groups(path, master_path=master_path, geometry=state.final_geometry,
                                config_yaml=config_yaml, version=version,
                                image=state.image_stats, groups=state_groups(state),
                                start_time=start_time, end_time=end_time, outputs=outputs,
                                _after_create=_after_create)


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
        reflections: the integrated reflections (None: the file has none usable;
            ``reflection_problem`` says why when it has a reflection group).
        unit_cell: (6,) Å/deg cell of the run (None: not stored); ``space_group`` (None:
            not stored or 0); ``bandwidth_fwhm``; ``scan_deg`` (start, increment) of a
            rotation run (None for stills).
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
    reflections: Reflections | None = None
    reflection_problem: str | None = None
    unit_cell: np.ndarray | None = None
    space_group: int | None = None
    bandwidth_fwhm: float = 0.0
    partiality_refined: bool = False
    scan_deg: tuple[float, float] | None = None
    lab_frame: Any = None

    @property
    def has_reflections(self) -> bool:
        return self.reflections is not None


def _reflections(t: dict[str, np.ndarray] | None) -> tuple[Reflections | None, str | None]:
    """(:class:`Reflections` of the ``/entry/reflections`` fields, or None with the reason:
    no group, or required fields missing)."""
    if not t:
        return None, None
    missing = [c for c in REQUIRED_REFLECTION_FIELDS if c not in t]
    if missing:
        return None, (f"/entry/reflections lacks {', '.join(missing)}; it was not written by "
                      "jfjoch_process integration")
    n = len(t["h"])
    out = Reflections.empty(n)
    cols = {attr: np.asarray(t[name]).astype(getattr(out, attr).dtype)
            for name, attr in REFLECTION_FIELDS.items() if name in t}
    cols["hkl"] = np.stack([t["h"], t["k"], t["l"]], 1).astype(np.int32)
    if "image_first" not in t:
        cols["image_first"] = cols["image"]
    if "image_last" not in t:
        cols["image_last"] = cols["image"]
    return dataclasses.replace(out, **cols), None


def _crystal(mx: dict[str, np.ndarray]) -> dict[str, Any]:
    cell = np.asarray(mx.get("unit_cell", np.full(6, np.nan)), np.float64).reshape(-1)
    sg = int(np.asarray(mx.get("space_group", 0)))
    rot = "scan_increment_deg" in mx and "rotation_lattice" in mx
    return {"unit_cell": cell if cell.size == 6 and np.all(np.isfinite(cell)) else None,
            "space_group": sg or None,
            "bandwidth_fwhm": float(mx.get("bandwidth_fwhm", 0.0)),
            "partiality_refined": "pixelrefine_status" in mx,
            "scan_deg": ((float(mx["scan_start_deg"]), float(mx["scan_increment_deg"]))
                         if rot else None)}


def _lab_frame(f: h5py.File, mx: dict[str, np.ndarray], scan: Any) -> Any:
    """:class:`jfx.physics.rotation.LabFrame` of a rotation run from the detector module
    written by :func:`_write_geometry` and ``/entry/MX/rotation_axis``, ``beam_direction``;
    None for stills and files that lack any of them."""
    from jfx.physics.rotation import LabFrame

    det = "entry/instrument/detector"
    need = (f"{det}/transformations/translation", f"{det}/module/fast_pixel_direction",
            f"{det}/module/slow_pixel_direction")
    if scan is None or "rotation_axis" not in mx or "beam_direction" not in mx or any(
            p not in f for p in need):
        return None
    tr, fa, sl = (f[p] for p in need)
    origin_m = float(tr[()]) * np.asarray(tr.attrs["vector"], np.float64)
    return LabFrame(origin_mm=tuple(1e3 * origin_m),
                    fast=tuple(np.asarray(fa.attrs["vector"], np.float64)),
                    slow=tuple(np.asarray(sl.attrs["vector"], np.float64)),
                    pixel_mm=(1e3 * float(fa[()]), 1e3 * float(sl[()])),
                    beam=tuple(np.asarray(mx["beam_direction"], np.float64).reshape(3)),
                    axis=tuple(np.asarray(mx["rotation_axis"], np.float64).reshape(3)))


def _str(d: h5py.Dataset) -> str:
    v = d[()]
    return v.decode() if isinstance(v, bytes) else str(v)


def read_process_h5(path: str | os.PathLike) -> ProcessFile:
    """Read a ``_process.h5`` file written by :func:`write_process_h5`.

    Raises:
        InputError: missing file, not HDF5, or not a jfx ``_process.h5`` (one-line message).
    """
    path = Path(path)
    from jfx.io.output_set import recover

    recover(path.parent)  # a run killed while moving its outputs into place: complete it
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
                image = ImageStats(*(ig[fl.name][()] if fl.name in ig else None
                                     for fl in dataclasses.fields(ImageStats)))
            groups = {}
            for name in GROUPS:
                if name in f["entry"]:
                    groups[name] = {k: v[()] for k, v in f["entry"][name].items()
                                    if isinstance(v, h5py.Dataset)}
            refl, problem = _reflections(groups.get("reflections"))
            crystal = _crystal(groups.get("MX", {}))
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
                reflections=refl,
                reflection_problem=problem,
                lab_frame=_lab_frame(f, groups.get("MX", {}), crystal["scan_deg"]),
                **crystal,
            )
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"cannot read {path}: {' '.join(str(e).split())}") from None
