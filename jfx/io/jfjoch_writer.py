"""Writer of Jungfraujoch-style NXmx master + data files (all three layouts).

``write_jungfraujoch(prefix, frames, n_images=…, geometry=…)`` writes
``<prefix>_master.h5`` and, for the ``legacy`` and ``vds`` layouts,
``<prefix>_data_000001.h5``, ``<prefix>_data_000002.h5``, … (``images_per_file`` images
each). Frames are streamed: only one frame (or one input block) is held at a time.

Layouts (what :func:`jfx.io.nxmx.open_master` reads back):

* ``legacy``: master ``/entry/data/data_NNNNNN`` external links to
  ``<prefix>_data_NNNNNN.h5:/entry/data/data``.
* ``vds``: master ``/entry/data/data`` is a virtual dataset over the data files.
* ``single``: images stored in the master file itself (``/entry/data/data``).

Images: one chunk per image (1, ny, nx), bitshuffle+LZ4 (``bslz4``), bitshuffle+zstd
(``bszstd``) or uncompressed (``none``). Masked pixels (nonzero ``pixel_mask``) and
non-finite values are written as the error value (type minimum for signed, maximum for
unsigned); other values are rounded and clipped into the type's valid range
[min + 1, max] (signed) / [0, max − 1] (unsigned) so that no real pixel looks invalid.

Geometry follows the Jungfraujoch master (see docs/input_format.md):
``beam_center_x/y`` (px, first pixel centre = 0), ``detector_distance``/``distance`` (m),
``transformations/translation`` = lab position of pixel (0, 0) (unit vector + norm in m),
``module/fast_pixel_direction``/``slow_pixel_direction`` (vectors from the geometry, step =
pixel size in m), ``/entry/sample/transformations/omega`` (deg per image) for rotation data.
All files are written under temporary names (with the normal umask-derived mode) and moved
into place together only on success, as one output set (:mod:`jfx.io.output_set`: data files
first, then the master; a data file of an earlier set with more files is removed).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from pathlib import Path
from typing import Iterable

import h5py
import hdf5plugin
import numpy as np

from jfx.io.output_set import OutputSet
from jfx.io.nxmx import SUPPORTED_DTYPES, error_value_of
from jfx.models.geometry import Geometry
from jfx.models.spots import StoredSpots

__all__ = ["write_jungfraujoch"]

_CODECS = ("bslz4", "bszstd", "none")
_LAYOUTS = ("legacy", "vds", "single")


def _compression(codec: str) -> dict:
    if codec == "bslz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if codec == "bszstd":
        return dict(hdf5plugin.Bitshuffle(cname="zstd"))
    return {}


def _to_dtype(frame: np.ndarray, dtype: np.dtype, err: int, mask: np.ndarray | None) -> np.ndarray:
    """Round, clip into [valid min, valid max] and mark invalid pixels with ``err``."""
    info = np.iinfo(dtype)
    lo, hi = (info.min + 1, info.max) if dtype.kind == "i" else (0, info.max - 1)
    a = np.asarray(frame)
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        out = np.clip(np.rint(np.where(bad, 0, a)), lo, hi).astype(dtype)
        out[bad] = err
    elif a.dtype == dtype:
        out = a.copy()  # native values pass through unchanged (error values included)
    else:
        out = np.clip(a.astype(np.int64), lo, hi).astype(dtype)
        if a.dtype in SUPPORTED_DTYPES:
            # keep the source type's error marker an error marker
            out[a == error_value_of(a.dtype)] = err
    if mask is not None:
        out[mask] = err
    return out


def _str(g: h5py.Group, name: str, value: str, **attrs) -> h5py.Dataset:
    ds = g.create_dataset(name, data=value, dtype=h5py.string_dtype())
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


def _num(g: h5py.Group, name: str, value, units: str | None = None, **attrs) -> h5py.Dataset:
    ds = g.create_dataset(name, data=value)
    if units is not None:
        ds.attrs["units"] = units
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    g = parent.require_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _write_extra(f: h5py.File, extra: dict) -> None:
    """``extra``: {"/entry/x/y": value, "/entry/x/y@attr": value} (groups created)."""
    for key, value in extra.items():
        path, _, attr = str(key).partition("@")
        path = "/" + path.strip("/")
        if attr:
            obj = f[path]
            obj.attrs[attr] = value
            continue
        parent, _, name = path.rpartition("/")
        g = f.require_group(parent or "/")
        if name in g:
            del g[name]
        if isinstance(value, str):
            _str(g, name, value)
        else:
            g.create_dataset(name, data=np.asarray(value))


def _write_metadata(f: h5py.File, *, n_images, shape, geometry: Geometry, dtype, mask_u32,
                    saturation_value, unit_cell, space_group, bandwidth_fwhm, stored_spots,
                    sample_name, detector_description, now: str) -> None:
    beam, det, gon = geometry.beam, geometry.detector, geometry.goniometer
    ny, nx = shape
    wl = float(beam.wavelength_A)
    px_mm, py_mm = det.pixel_size_mm
    bx, by = (float(v) for v in np.asarray(det.beam_center_px))
    dist_m = float(det.distance_mm) * 1e-3
    fast = np.asarray(det.fast_axis, dtype=np.float64)
    slow = np.asarray(det.slow_axis, dtype=np.float64)
    bdir = np.asarray(beam.direction, dtype=np.float64)
    origin_m = (float(det.distance_mm) * bdir - bx * px_mm * fast - by * py_mm * slow) * 1e-3

    entry = _group(f, "entry", "NXentry")
    _str(entry, "definition", "NXmx")
    _str(entry, "start_time", now)
    _str(entry, "end_time", now)
    _str(entry, "end_time_estimated", now)

    src = _group(entry, "source", "NXsource")
    _str(src, "name", "jfx simulated source", short_name="SIM")
    _str(src, "type", "Synchrotron X-ray Source")

    inst = _group(entry, "instrument", "NXinstrument")
    _str(inst, "name", "jfx simulated beamline", short_name="SIM")

    bg = _group(inst, "beam", "NXbeam")
    _num(bg, "incident_wavelength", wl, "angstrom")
    _num(bg, "incident_energy", 12.398419843320026 / wl * 1e3, "eV")
    if bandwidth_fwhm is not None:
        _num(bg, "incident_wavelength_spread", float(bandwidth_fwhm) * wl, "angstrom")
        _num(bg, "bandwidth", float(bandwidth_fwhm))
    pfrac = float(beam.polarization_fraction)
    pax = np.asarray(beam.polarization_axis, dtype=np.float64)
    plin = 2.0 * pfrac - 1.0
    psi = float(np.arctan2(pax[1], pax[0]))
    _num(bg, "incident_polarization_stokes",
         np.array([1.0, plin * np.cos(2 * psi), plin * np.sin(2 * psi), 0.0]))

    dg = _group(inst, "detector", "NXdetector")
    _num(dg, "beam_center_x", bx, "pixel")
    _num(dg, "beam_center_y", by, "pixel")
    _num(dg, "detector_distance", dist_m, "m")
    _num(dg, "distance", dist_m, "m")
    _num(dg, "x_pixel_size", px_mm * 1e-3, "m")
    _num(dg, "y_pixel_size", py_mm * 1e-3, "m")
    _num(dg, "sensor_thickness", det.sensor_thickness_mm * 1e-3, "m")
    _str(dg, "sensor_material", det.sensor_material)
    _str(dg, "description", detector_description)
    _str(dg, "type", "HPD")
    _num(dg, "bit_depth_image", int(np.dtype(dtype).itemsize * 8))
    _num(dg, "bit_depth_readout", 16)
    _num(dg, "count_time", 1e-3, "s")
    _num(dg, "frame_time", 1e-3, "s")
    if saturation_value is not None:
        sv = float(saturation_value)
        _num(dg, "saturation_value", np.int64(sv) if sv.is_integer() else sv)
    _num(dg, "underload_value", int(error_value_of(dtype)))
    _num(dg, "flatfield_applied", False)
    _num(dg, "pixel_mask_applied", False)
    _num(dg, "countrate_correction_applied", False)
    _str(dg, "acquisition_type", "triggered")
    _str(dg, "depends_on", "/entry/instrument/detector/transformations/translation")

    spec = _group(dg, "detectorSpecific", "NXcollection")
    _num(spec, "nimages", np.int64(n_images))
    _num(spec, "ntrigger", np.int64(1))
    _num(spec, "x_pixels_in_detector", np.int64(nx))
    _num(spec, "y_pixels_in_detector", np.int64(ny))
    _str(spec, "software_git_commit", "jfx")
    pm = spec.create_dataset("pixel_mask", data=mask_u32, chunks=(ny, nx),
                             **_compression("bslz4"))
    dg["pixel_mask"] = pm  # hard link, as Jungfraujoch does

    tr = _group(dg, "transformations", "NXtransformations")
    norm = float(np.linalg.norm(origin_m))
    vec = origin_m / norm if norm > 0 else np.array([0.0, 0.0, 1.0])
    _num(tr, "translation", norm, "m", depends_on=".", transformation_type="translation",
         vector=vec)
    mod = _group(dg, "module", "NXdetector_module")
    _num(mod, "data_origin", np.array([0, 0], dtype=np.int32))
    _num(mod, "data_size", np.array([ny, nx], dtype=np.int32))
    _num(mod, "data_stride", np.array([1, 1], dtype=np.int32))
    for name, v, step in (("fast_pixel_direction", fast, px_mm), ("slow_pixel_direction", slow, py_mm)):
        _num(mod, name, step * 1e-3, "m",
             depends_on="/entry/instrument/detector/transformations/translation",
             transformation_type="translation", vector=v, offset=np.zeros(3))

    sg = _group(entry, "sample", "NXsample")
    _str(sg, "name", sample_name)
    if gon is not None:
        start = float(np.rad2deg(float(gon.start_rad)))
        inc = float(np.rad2deg(float(gon.increment_rad)))
        st = _group(sg, "transformations", "NXtransformations")
        _num(st, "omega", start + inc * np.arange(n_images, dtype=np.float64), "deg",
             depends_on=".", transformation_type="rotation",
             vector=np.asarray(gon.axis, dtype=np.float64))
        _num(st, "omega_increment_set", inc, "deg")
        _num(st, "omega_end", start + inc * np.arange(1, n_images + 1, dtype=np.float64), "deg")
        _str(sg, "depends_on", "/entry/sample/transformations/omega")
    else:
        _str(sg, "depends_on", ".")
    if unit_cell is not None:
        uc = np.asarray(unit_cell, dtype=np.float64).ravel()
        if uc.size != 6:
            raise ValueError(f"unit_cell needs 6 numbers, got {uc.size}")
        _num(sg, "unit_cell", uc)
    if space_group is not None:
        _num(sg, "space_group", np.int64(space_group))

    if stored_spots is not None:
        mx = _group(entry, "MX", "NXcollection")
        n = np.asarray(stored_spots.n_peaks, dtype=np.int32)
        if n.shape != (n_images,):
            raise ValueError(f"stored_spots.n_peaks must have shape ({n_images},), got {n.shape}")
        mx.create_dataset("nPeaks", data=n)
        for name, arr in (("peakXPosRaw", stored_spots.x_px), ("peakYPosRaw", stored_spots.y_px),
                          ("peakTotalIntensity", stored_spots.intensity)):
            a = np.asarray(arr, dtype=np.float32)
            if a.ndim != 2 or a.shape[0] != n_images:
                raise ValueError(f"stored_spots.{name} must be (n_images, max_spots)")
            mx.create_dataset(name, data=a, chunks=(1, max(1, a.shape[1])), **_compression("bslz4"))


def _data_file_meta(f: h5py.File, first: int, count: int) -> h5py.Group:
    entry = _group(f, "entry", "NXentry")
    _str(entry, "definition", "NXmx")
    data = _group(entry, "data", "NXdata")
    detg = _group(entry, "detector", "NXcollection")
    detg.create_dataset("number", data=np.arange(first, first + count, dtype=np.int64))
    return data


def write_jungfraujoch(
    prefix: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    n_images: int,
    geometry: Geometry,
    dtype="int32",
    layout: str = "legacy",
    codec: str = "bslz4",
    images_per_file: int = 1000,
    pixel_mask: np.ndarray | None = None,
    saturation_value: float | None = None,
    unit_cell=None,
    space_group: int | None = None,
    bandwidth_fwhm: float | None = None,
    stored_spots: StoredSpots | None = None,
    sample_name: str = "jfx simulation",
    detector_description: str = "PSI JUNGFRAU",
    extra: dict | None = None,
) -> Path:
    """Write a Jungfraujoch-layout NXmx data set; returns ``<prefix>_master.h5``.

    Args:
        prefix: output prefix (directory created if needed).
        frames: iterable of (ny, nx) or (k, ny, nx) arrays (any numeric dtype), in image
            order, ``n_images`` images in total; (ny, nx) = ``geometry.detector.shape``.
        n_images: number of images.
        geometry: beam, detector, goniometer (None → stills, ``depends_on = "."``).
        dtype: pixel type: int16 | int32 | uint16 | uint32 (values rounded and clipped).
        layout: "legacy" | "vds" | "single".
        codec: "bslz4" | "bszstd" | "none".
        images_per_file: images per data file (legacy/vds).
        pixel_mask: (ny, nx) uint32, nonzero = bad; such pixels are also written as the
            error value in every frame. Zeros if None.
        saturation_value: written as ``detector/saturation_value`` if given.
        unit_cell, space_group, bandwidth_fwhm: optional sample / beam metadata.
        stored_spots: optional spot lists written to ``/entry/MX``.
        extra: {"/abs/path": value, "/abs/path@attr": value} extra items for the master.
    Raises:
        ValueError: bad arguments or a frame count/shape that does not match.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {_CODECS}, got {codec!r}")
    dt = np.dtype(dtype)
    if dt not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be int16/int32/uint16/uint32, got {dt}")
    n_images = int(n_images)
    if n_images < 1:
        raise ValueError("n_images must be >= 1")
    ipf = max(1, int(images_per_file))
    shape = tuple(int(s) for s in geometry.detector.shape)
    ny, nx = shape
    err = error_value_of(dt)
    if pixel_mask is not None:
        mask_u32 = np.asarray(pixel_mask).astype(np.uint32)
        if mask_u32.shape != shape:
            raise ValueError(f"pixel_mask shape {mask_u32.shape} != detector shape {shape}")
    else:
        mask_u32 = np.zeros(shape, dtype=np.uint32)
    bad = mask_u32 != 0
    bad = bad if bad.any() else None

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    master = prefix.parent / f"{prefix.name}_master.h5"
    if layout == "single":
        files = [(0, n_images)]
    else:
        files = [(s, min(ipf, n_images - s)) for s in range(0, n_images, ipf)]
    data_names = [f"{prefix.name}_data_{k + 1:06d}.h5" for k in range(len(files))]

    outs = OutputSet(prefix, owned=(r"_master\.h5", r"_data_\d{6}\.h5"))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    comp = _compression(codec)
    open_files: list[h5py.File] = []
    committed = False
    try:
        # data files first, then the master (a reader never sees a master without data)
        dtmps = ([] if layout == "single"
                 else [outs.temp(prefix.parent / name) for name in data_names])
        mtmp = outs.temp(master)
        mf = h5py.File(mtmp, "w", libver=("v110", "latest"))
        open_files.append(mf)
        _write_metadata(mf, n_images=n_images, shape=shape, geometry=geometry, dtype=dt,
                        mask_u32=mask_u32, saturation_value=saturation_value,
                        unit_cell=unit_cell, space_group=space_group,
                        bandwidth_fwhm=bandwidth_fwhm, stored_spots=stored_spots,
                        sample_name=sample_name, detector_description=detector_description,
                        now=now)
        mdata = _group(mf["entry"], "data", "NXdata")

        # create the per-file image datasets
        targets: list[h5py.Dataset] = []
        for k, (first, count) in enumerate(files):
            if layout == "single":
                ds = mdata.create_dataset("data", shape=(count, ny, nx), dtype=dt,
                                          chunks=(1, ny, nx), fillvalue=err, **comp)
            else:
                df = h5py.File(dtmps[k], "w", libver=("v110", "latest"))
                open_files.append(df)
                g = _data_file_meta(df, first, count)
                ds = g.create_dataset("data", shape=(count, ny, nx), dtype=dt,
                                      chunks=(1, ny, nx), fillvalue=err, **comp)
            ds.attrs["image_nr_low"] = np.int64(first + 1)
            ds.attrs["image_nr_high"] = np.int64(first + count)
            targets.append(ds)

        if layout == "legacy":
            for k, name in enumerate(data_names):
                mdata[f"data_{k + 1:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        elif layout == "vds":
            vl = h5py.VirtualLayout(shape=(n_images, ny, nx), dtype=dt)
            for k, (first, count) in enumerate(files):
                vs = h5py.VirtualSource(data_names[k], "/entry/data/data", shape=(count, ny, nx))
                vl[first:first + count] = vs
            mdata.create_virtual_dataset("data", vl, fillvalue=err)
        if layout != "legacy":
            mf["entry/instrument/detector"]["data"] = h5py.SoftLink("/entry/data/data")

        # stream the frames
        i = 0
        for block in frames:
            a = np.asarray(block)
            if a.ndim == 2:
                a = a[None]
            if a.ndim != 3 or a.shape[1:] != shape:
                raise ValueError(f"frame block shape {a.shape} does not match detector {shape}")
            for fr in a:
                if i >= n_images:
                    raise ValueError(f"more than n_images={n_images} frames given")
                k = 0 if layout == "single" else i // ipf
                j = i - files[k][0]
                targets[k][j] = _to_dtype(fr, dt, err, bad)
                i += 1
        if i != n_images:
            raise ValueError(f"got {i} frames, expected n_images={n_images}")

        if extra:
            _write_extra(mf, extra)
        for fh in open_files:
            fh.close()
        open_files.clear()
        outs.commit()
        committed = True
        return master
    finally:
        for fh in open_files:
            with contextlib.suppress(Exception):
                fh.close()
        if not committed:
            outs.discard()
