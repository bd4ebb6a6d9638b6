"""NXmx beam, detector and goniometer → :class:`~jfx.models.geometry.Geometry`.

Frame: NXmx/McStas lab frame (z along the beam, y up); the beam direction is taken as +z.
Pixel (0, 0) centre = (0.0, 0.0). Units attributes are honoured everywhere (lengths → m,
angles → deg, energies → keV); an unknown unit is an :class:`~jfx.io.errors.InputError`.

* :class:`~jfx.io.nxmx.transforms.Transformations` (in :mod:`jfx.io.nxmx.transforms`)
  reads NXtransformations datasets and follows ``depends_on`` chains (innermost first).
* :func:`read_wavelength`, :func:`detector_chain`, :func:`read_detector`, :func:`read_beam`,
  :func:`read_goniometer` — one model part each, from the h5py groups.
* :func:`parse_geometry` composes them into a :class:`GeometryInfo` (the
  :class:`Geometry` plus the chain-derived values :class:`~jfx.io.nxmx.MasterFile` exposes).

Non-fatal findings (chain and fields disagree, a ``depends_on`` target found elsewhere) are
appended to a caller-provided ``warnings`` list, in the order they are found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from jfx.io.errors import InputError
from jfx.io.h5util import attr_str, read_scalar, read_str
from jfx.io.nxmx.transforms import (
    Transform,
    Transformations,
    chain_matrix,
    length_factor,
    read_length,
)
from jfx.models.geometry import Beam, Detector, Geometry, Goniometer

_HC_KEV_A = 12.398419843320026  # h·c in keV·Å
_MATERIALS = {"silicon": "Si", "si": "Si", "cdte": "CdTe", "gaas": "GaAs", "germanium": "Ge"}


# ----------------------------------------------------------------------------------------
# model parts


class DetectorChain(NamedTuple):
    """Detector position from NXtransformations (lab frame, metres / unit vectors)."""

    origin_m: np.ndarray          # (3,) centre of pixel (0, 0)
    fast: np.ndarray              # (3,) fast pixel direction
    slow: np.ndarray              # (3,) slow pixel direction
    fast_step_m: float | None     # fast_pixel_direction value (pixel pitch) or None
    slow_step_m: float | None


def read_wavelength(beam_g: h5py.Group | None, path: Path) -> float:
    """Wavelength (Å) from ``incident_wavelength`` (default Å) or ``incident_energy``
    (eV/keV; without units > 100 means eV)."""
    wl = None
    if isinstance(beam_g, h5py.Group) and "incident_wavelength" in beam_g:
        ds = beam_g["incident_wavelength"]
        unit = attr_str(ds, "units", "angstrom")
        wl = read_scalar(ds) * length_factor(unit, ds.name, path) / 1e-10
    elif isinstance(beam_g, h5py.Group) and "incident_energy" in beam_g:
        ds = beam_g["incident_energy"]
        e = read_scalar(ds)
        u = (attr_str(ds, "units") or ("eV" if e > 100 else "keV")).strip().lower()
        scale = {"ev": 1e-3, "kev": 1.0, "mev": 1e3}.get(u)
        if scale is None:
            raise InputError(f"unknown energy unit '{u}' for {ds.name} in {path}")
        if e > 0:
            wl = _HC_KEV_A / (e * scale)
    if wl is None or not np.isfinite(wl) or wl <= 0:
        raise InputError(f"missing or invalid wavelength (/entry/instrument/beam/"
                         f"incident_wavelength or incident_energy) in {path}")
    return wl


def detector_chain(det: h5py.Group, tr: Transformations) -> DetectorChain | None:
    """The detector's position from the module's fast/slow pixel directions (or from the
    detector's own ``depends_on``), or None if the file has no detector chain."""
    module = det.get("module")
    if not isinstance(module, h5py.Group):
        module = None
        for k in det:
            o = det.get(k)
            if isinstance(o, h5py.Group) and attr_str(o, "NX_class") == "NXdetector_module":
                module = o
                break
    if module is not None and "fast_pixel_direction" in module and "slow_pixel_direction" in module:
        ft = tr.read(module["fast_pixel_direction"])
        st = tr.read(module["slow_pixel_direction"])
        Mf = chain_matrix(tr.chain(ft.depends_on, ft.group, ft.path))
        Ms = chain_matrix(tr.chain(st.depends_on, st.group, st.path))
        fast = Mf[:3, :3] @ ft.vector
        slow = Ms[:3, :3] @ st.vector
        origin = (Mf @ np.append(ft.offset_m, 1.0))[:3] + Ms[:3, :3] @ st.offset_m
        if not np.allclose(Mf[:3, 3], Ms[:3, 3], atol=1e-9):
            tr.warnings.append("fast and slow pixel directions depend on different "
                               "positions; using the fast one's")
        return DetectorChain(origin, fast, slow, ft.value(), st.value())
    dep = det.get("depends_on")
    if isinstance(dep, h5py.Dataset):
        ref = read_str(dep)
        if ref and ref != ".":
            M = chain_matrix(tr.chain(ref, det.name, det.name + "/depends_on"))
            return DetectorChain(M[:3, 3], M[:3, :3] @ np.array([1.0, 0, 0]),
                                 M[:3, :3] @ np.array([0, 1.0, 0]), None, None)
    return None


@dataclass(frozen=True)
class DetectorInfo:
    """A :class:`Detector` plus what its NXtransformations chain implies (None: no chain).

    Attributes:
        chain_origin_mm: (3,) lab position of pixel (0, 0) centre (mm).
        chain_beam_center_px: (x, y) where the +z beam meets the detector plane (px).
        chain_distance_mm: distance along the beam to the detector plane (mm).
    """

    detector: Detector
    chain_origin_mm: np.ndarray | None
    chain_beam_center_px: tuple[float, float] | None
    chain_distance_mm: float | None


def read_detector(det: h5py.Group, image_shape: tuple[int, int], chain: DetectorChain | None,
                  path: Path, warnings: list[str]) -> DetectorInfo:
    """Detector from the fields (pixel size, ``beam_center_x/y`` px, ``detector_distance``,
    sensor) and the chain; the fields win where both exist (warning if they disagree)."""
    p = path
    psz = []
    for key, step in (("x_pixel_size", chain and chain.fast_step_m),
                      ("y_pixel_size", chain and chain.slow_step_m)):
        if key in det:
            psz.append(read_length(det[key], p))
        elif chain is not None and step:
            psz.append(float(step))
        else:
            raise InputError(f"missing pixel size (/entry/instrument/detector/{key}) in {p}")
    if chain is not None and chain.fast_step_m and abs(chain.fast_step_m - psz[0]) > 1e-3 * psz[0]:
        warnings.append(f"x_pixel_size {psz[0]} m differs from the fast_pixel_direction "
                        f"step {chain.fast_step_m} m")
    px_mm, py_mm = psz[0] * 1e3, psz[1] * 1e3
    if not (px_mm > 0 and py_mm > 0):
        raise InputError(f"invalid pixel size {psz} m in {p}")

    if chain is not None:
        origin_mm = np.asarray(chain.origin_m) * 1e3
        fast, slow = np.asarray(chain.fast), np.asarray(chain.slow)
        fast, slow = fast / np.linalg.norm(fast), slow / np.linalg.norm(slow)
        if abs(float(fast @ slow)) > 1e-3:
            raise InputError(f"fast and slow pixel directions are not perpendicular "
                             f"(fast {fast.round(4).tolist()}, slow {slow.round(4).tolist()}) "
                             f"in {p}")
    else:
        origin_mm, fast, slow = None, np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
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

    if "beam_center_x" in det and "beam_center_y" in det:
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
        dist_mm = read_length(dist_ds, p) * 1e3
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
            warnings.append(
                f"detector NXtransformations imply beam centre ({chain_bc[0]:.2f}, "
                f"{chain_bc[1]:.2f}) px and distance {chain_d:.3f} mm, but the fields say "
                f"({bx:.2f}, {by:.2f}) px and {dist_mm:.3f} mm; using the fields")

    thick_mm = 0.32
    if "sensor_thickness" in det:
        thick_mm = read_length(det["sensor_thickness"], p) * 1e3
    material = "Si"
    if "sensor_material" in det:
        m = read_str(det["sensor_material"])
        material = _MATERIALS.get(m.lower(), m) if m else "Si"

    detector = Detector.create(
        distance_mm=dist_mm, beam_center_px=(bx, by), shape=image_shape,
        pixel_size_mm=(px_mm, py_mm), fast_axis=fast, slow_axis=slow,
        sensor_thickness_mm=thick_mm, sensor_material=material,
    )
    return DetectorInfo(detector, origin_mm, chain_bc, chain_d)


class BeamInfo(NamedTuple):
    """A :class:`Beam` and the file's values behind it."""

    beam: Beam
    bandwidth_fwhm: float | None   # relative FWHM Δλ/λ from the file, None if absent
    polarization_fraction: float   # fraction along the polarisation axis (0.99 by default)


def read_beam(beam_g: h5py.Group | None, wavelength_A: float, path: Path) -> BeamInfo:
    """Beam of wavelength ``wavelength_A`` (Å) with the file's bandwidth
    (``incident_wavelength_spread`` / λ, or ``bandwidth``) and polarisation
    (``incident_polarization_stokes`` S0..S2; default 0.99 along x)."""
    bandwidth = None
    pol_frac, pol_axis = 0.99, (1.0, 0.0, 0.0)
    if isinstance(beam_g, h5py.Group):
        if "incident_wavelength_spread" in beam_g:
            ds = beam_g["incident_wavelength_spread"]
            spread_A = read_scalar(ds) * length_factor(
                attr_str(ds, "units", "angstrom"), ds.name, path) / 1e-10
            bandwidth = spread_A / wavelength_A
        elif "bandwidth" in beam_g:
            bandwidth = read_scalar(beam_g["bandwidth"])
        if "incident_polarization_stokes" in beam_g:
            s = np.asarray(beam_g["incident_polarization_stokes"][()], float).ravel()
            if s.size >= 3 and s[0] > 0:
                plin = min(1.0, math.hypot(s[1], s[2]) / s[0])
                psi = 0.5 * math.atan2(s[2], s[1])
                pol_frac = 0.5 * (1.0 + plin)
                pol_axis = (math.cos(psi), math.sin(psi), 0.0)
    beam = Beam.create(wavelength_A, bandwidth_fwhm=bandwidth or 0.0,
                       polarization_fraction=pol_frac, polarization_axis=pol_axis)
    return BeamInfo(beam, bandwidth, pol_frac)


class Scan(NamedTuple):
    """Rotation scan: goniometer, (n_images,) start angle of each image (deg) and the
    scanned axis' dataset path; all None for stills."""

    goniometer: Goniometer | None
    omega_deg: np.ndarray | None
    axis_path: str | None


def read_goniometer(sample: h5py.Group | None, tr: Transformations, n_images: int) -> Scan:
    """The scan of the sample's ``depends_on`` chain (or ``transformations/omega``): the one
    rotation whose angles vary (or that has a nonzero ``*_increment_set``)."""
    if not isinstance(sample, h5py.Group):
        return Scan(None, None, None)
    ref = None
    if "depends_on" in sample:
        d = sample["depends_on"]
        ref = read_str(d) if isinstance(d, h5py.Dataset) else attr_str(sample, "depends_on")
    elif "transformations" in sample and "omega" in sample["transformations"]:
        ref = "/entry/sample/transformations/omega"
    if not ref or ref == ".":
        return Scan(None, None, None)
    return _scan_of(tr.chain(ref, sample.name, sample.name + "/depends_on"), tr, n_images)


def _scan_of(chain: list[Transform], tr: Transformations, n_images: int) -> Scan:
    p = tr.path
    scans = []
    for k, t in enumerate(chain):
        if t.ttype != "rotation":
            continue
        distinct = np.unique(np.round(t.values, 9)).size
        inc = tr.increment_set(t)
        if distinct > 1 or (inc is not None and inc != 0.0):
            scans.append((k, t, inc))
    if not scans:
        return Scan(None, None, None)
    if len(scans) > 1:
        axes = ", ".join(s[1].path for s in scans)
        raise InputError(f"more than one scanned rotation axis ({axes}) in {p}")
    k, t, inc = scans[0]
    vals = t.values
    if vals.size < n_images:
        raise InputError(f"{t.path} has {vals.size} angles for {n_images} images in {p}")
    vals = vals[:n_images]
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
    outer = chain_matrix(chain[k + 1:])
    axis = outer[:3, :3] @ t.vector
    gonio = Goniometer.create(axis, float(vals[0]), float(inc))
    return Scan(gonio, vals.astype(np.float64), t.path)


# ----------------------------------------------------------------------------------------
# composition


@dataclass(frozen=True)
class GeometryInfo:
    """Everything :func:`parse_geometry` derives (see :class:`~jfx.io.nxmx.MasterFile`)."""

    geometry: Geometry
    wavelength_A: float
    beam: BeamInfo
    detector: DetectorInfo
    scan: Scan


def parse_geometry(f: h5py.File, det: h5py.Group, path: Path, image_shape: tuple[int, int],
                   n_images: int, warnings: list[str]) -> GeometryInfo:
    """Beam, detector and goniometer (None for stills) of an open NXmx file.

    Args:
        f: the master file; det: its ``/entry/instrument/detector`` group.
        path: master path (messages); image_shape: (ny, nx); n_images: images in the scan.
        warnings: non-fatal findings are appended here.
    """
    tr = Transformations(f, path, warnings)
    beam_g = f.get("entry/instrument/beam")
    wl = read_wavelength(beam_g, path)
    dinfo = read_detector(det, image_shape, detector_chain(det, tr), path, warnings)
    binfo = read_beam(beam_g, wl, path)
    scan = read_goniometer(f.get("entry/sample"), tr, n_images)
    geometry = Geometry(beam=binfo.beam, detector=dinfo.detector, goniometer=scan.goniometer)
    return GeometryInfo(geometry=geometry, wavelength_A=wl, beam=binfo, detector=dinfo,
                        scan=scan)
