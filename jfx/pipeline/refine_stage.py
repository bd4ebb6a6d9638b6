"""Refinement stage: every geometry refinement of a run, in one place.

* stills: each indexed still refined on its own lattice's spots
  (:func:`jfx.refine.refine.refine_stills`, ``-r`` chooses the free parameters); with a free
  detector the detector is pooled over the converged stills (:func:`pooled_detector`) and
  each crystal refined again against it.
* rotation: scan-static refinement of the sweep in two macro-cycles (the second
  re-assigns the Miller indices with the refined model), optionally scan-varying
  orientation blocks (``refine.scan_varying_deg``).
* rescue (indexing table in mode ``unconstrained``): the sweep refined on a symmetry-free
  lattice with the distance fixed, so that the runner can index again with the result.

Adds to the state: ``refinement`` (:class:`RefinementTable`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jfx.config import ProcessSettings
from jfx.models.geometry import Geometry
from jfx.pipeline.context import RunContext
from jfx.pipeline.state import ProcessState, RefinementTable

MAX_REFINE_SPOTS = 4096
"""Rotation refinement uses at most this many spots (a fixed-seed random subset over the
sweep): the Jacobian's memory grows with the spots. Measured (lyso_rotation, 1M): peak RSS
25 images 0.92 GB / 250 images 0.99 GB (ratio 1.08) with 4096, against 0.88 / 1.25 GB
(1.43) with 16384; refined distance within 0.07 % either way."""

POOL_MIN_STILLS = 3
"""The detector is pooled over the stills when at least this many converged."""


@dataclasses.dataclass(frozen=True)
class RefineSummary:
    """Refinement summary (console).

    Attributes:
        mode: ``stills`` | ``rotation``; refined: images / sweeps converged.
        rmsd_px, rmsd_phi_deg: median rms position (and φ) residual.
        beam_center_px, distance_mm: the refined detector (pooled over stills).
        n_spots, n_outliers, rmsd_all: rotation: spots refined, outliers rejected before
            the last refinement and the (px, deg) rmsd before the rejection.
    """

    mode: str
    refined: int
    rmsd_px: float
    rmsd_phi_deg: float | None
    beam_center_px: tuple[float, float]
    distance_mm: float
    n_spots: int | None = None
    n_outliers: int = 0
    rmsd_all: tuple[float, float] | None = None

    def lines(self) -> list[str]:
        phi = f", {self.rmsd_phi_deg:.3f} deg" if self.rmsd_phi_deg is not None else ""
        spots = ""
        if self.n_spots is not None:
            spots = f" on {self.n_spots} spots"
            if self.n_outliers:
                spots += f" ({self.n_outliers} outliers rejected"
                if self.rmsd_all is not None:
                    spots += (f"; before: {self.rmsd_all[0]:.3f} px, "
                              f"{self.rmsd_all[1]:.3f} deg")
                spots += ")"
        bx, by = self.beam_center_px
        return [(f"refinement ({self.mode}): {self.refined} converged, rmsd {self.rmsd_px:.3f} "
                 f"px{phi}{spots}; beam centre ({bx:.2f}, {by:.2f}) px, distance "
                 f"{self.distance_mm:.3f} mm")]


def summary(state: ProcessState) -> RefineSummary | None:
    """The refinement summary (None when refinement did not run)."""
    r = state.refinement
    if r is None:
        return None
    det = r.geometry.detector
    bc = np.asarray(det.beam_center_px, np.float64)
    return RefineSummary(mode=r.mode, refined=int(r.refined), rmsd_px=float(r.rmsd_px),
                         rmsd_phi_deg=r.rmsd_phi_deg, beam_center_px=(float(bc[0]), float(bc[1])),
                         distance_mm=float(det.distance_mm), n_spots=r.n_spots,
                         n_outliers=r.n_outliers, rmsd_all=r.rmsd_all)


def enabled(settings: ProcessSettings) -> bool:
    """Whether the ``-r`` preset refines at all (``-r none``: no)."""
    return settings.refine.enabled


def cap_spots(mask: np.ndarray, cap: int = MAX_REFINE_SPOTS) -> np.ndarray:
    """``mask`` with at most ``cap`` True entries (a fixed-seed random subset)."""
    idx = np.flatnonzero(mask)
    if idx.size <= cap:
        return mask
    keep = np.random.default_rng(0).choice(idx, cap, replace=False)
    out = np.zeros(mask.size, dtype=bool)
    out[keep] = True
    return out.reshape(mask.shape)


def pooled_detector(geometry: Geometry, per_image: Geometry, use: np.ndarray) -> Geometry:
    """``geometry`` with the median beam centre and distance of the per-image refined
    detectors ``per_image`` (leaves with a leading image axis) over the images ``use``.

    One still fixes its detector poorly (the distance is degenerate with the cell scale to
    ≈ 0.3 %); the detector is one object, so the median over many stills pins it."""
    det = per_image.detector
    bc = np.nanmedian(np.asarray(det.beam_center_px, np.float64)[use], axis=0)
    dist = float(np.nanmedian(np.asarray(det.distance_mm, np.float64)[use]))
    return dataclasses.replace(geometry, detector=dataclasses.replace(
        geometry.detector, beam_center_px=np.asarray(bc), distance_mm=np.asarray(dist)))


def _detector_free(settings: ProcessSettings) -> bool:
    return any(f.startswith("detector.") for f in settings.refine.free)


def _without(settings, prefix: str):
    """``settings.refine`` with the free parameters starting with ``prefix`` fixed."""
    return dataclasses.replace(settings.refine, free=tuple(
        f for f in settings.refine.free if not f.startswith(prefix)))


def still_spots(state: ProcessState):
    """(positions (m,) of the indexed stills, :class:`RefineSpots` of lattice 0's spots,
    lattice-0 bases (m, 3, 3)). Only the spots indexed by the first lattice enter (the
    Miller indices are the indexer's, in that lattice)."""
    from jfx.refine.refine import RefineSpots

    ix = state.indexing
    sel = np.flatnonzero(ix.indexed)
    x = np.asarray(state.spots.x_px, np.float64)[sel]
    y = np.asarray(state.spots.y_px, np.float64)[sel]
    ok = ix.spots_of_lattice(0)[sel] & np.isfinite(x) & np.isfinite(y)
    spots = RefineSpots.create(np.asarray(ix.hkl[sel], np.int32), x, y, valid=ok)
    return sel, spots, np.asarray(ix.basis[sel, 0], np.float64)


def _no_tick(n: int = 1) -> None:
    """Progress callback that does nothing."""


STILLS_STEPS = 2
"""Progress steps of stills refinement: every still, then every crystal on the pooled
detector."""
SWEEP_STEPS = 4
"""Progress steps of sweep refinement: two scan-static macro-cycles, the refinement after
outlier rejection, the scan-varying blocks."""


def refine_stills_pooled(state: ProcessState, settings: ProcessSettings,
                         tick: Callable[[int], None] = _no_tick, mesh: Any = None
                         ) -> RefinementTable:
    """Refine every indexed still, pool the detector, refine each crystal against it.
    ``tick(n)``: progress, :data:`STILLS_STEPS` in all; ``mesh``: the devices the stills'
    batches are split over (:attr:`RunContext.mesh`)."""
    from jfx.models.lattice import Lattice
    from jfx.refine.refine import refine_stills

    sg = settings.crystal.space_group
    solver = settings.refine.solver
    geo = state.indexing.geometry
    sel, spots, basis = still_spots(state)
    res = refine_stills(spots, geo, Lattice(basis=basis, space_group=sg), settings.refine,
                        solver=solver, mesh=mesh)
    tick(1)
    good = np.asarray(res.status) == 0
    if _detector_free(settings) and int(good.sum()) >= POOL_MIN_STILLS:
        geo_p = pooled_detector(geo, res.geometry, good)
        res2 = refine_stills(spots, geo_p, Lattice(basis=np.asarray(res.basis), space_group=sg),
                             _without(settings, "detector."), solver=solver, mesh=mesh)
        if int(np.sum(np.asarray(res2.status) == 0)) >= int(good.sum()) * 0.9:
            res = res2
    tick(1)
    rmsd = float(np.nanmedian(res.rmsd_px)) if np.any(np.isfinite(res.rmsd_px)) \
        else float("nan")
    # the geometry for the output and the summary: the detector pooled over the converged
    # stills (all of them when none converged)
    conv = np.asarray(res.status) == 0
    pooled = pooled_detector(geo, res.geometry, conv if conv.any() else np.ones(len(sel), bool))
    return RefinementTable(mode="stills", geometry=pooled, images=sel,
                           basis=np.asarray(res.basis, np.float64),
                           status=np.asarray(res.status, np.int32), rmsd_px=rmsd,
                           refined=int(np.sum(np.asarray(res.status) == 0)),
                           image_geometry=res.geometry,
                           lattices_replace_indexing=sg is not None)


SIGMA_XY_PX = 0.25
"""Assumed position precision of a spot centroid (px), the scale of the φ weights."""

SIGMA_ONE_IMAGE = 1.0 / np.sqrt(12.0)
"""φ precision (frames) of a spot seen on one image: the image centre, uniform error."""


def _phi_scale(geo: Geometry, sigma_frames: np.ndarray | float = SIGMA_ONE_IMAGE
               ) -> np.ndarray | float | None:
    """Weight of the φ residuals: σ_xy / σ_φ (px per rad), so that a φ residual of one σ_φ
    counts as much as a position residual of σ_xy = :data:`SIGMA_XY_PX`.

    ``sigma_frames``: the φ precision of each observation in frames. A spot found on one
    image knows its angle only to the image's width, σ = 1/√12 frame (the default); a 3D
    spot's centroid seen on n consecutive images interpolates between them,
    σ ≈ 1/(√12·min(n, 3)) (:func:`centroid_sigma_frames`). Weighting φ as arc length on the detector instead
    (~10× more at 0.5°/image) let the frame quantisation pull the distance by up to 0.2 %."""
    inc = abs(float(geo.goniometer.increment_rad))
    if inc <= 0:
        return None
    return SIGMA_XY_PX / (inc * np.asarray(sigma_frames, np.float64))


CENTROID_MAX_IMAGES = 3
"""Images beyond which a 3D spot's φ centroid is taken to get no more precise."""


def centroid_sigma_frames(n_images: np.ndarray) -> np.ndarray:
    """φ precision (frames) of 3D spot centroids seen on ``n_images`` consecutive images:
    1/(√12·min(n, 3)). One image: the uniform quantisation error of the image centre, 1/√12.
    Several: the intensity-weighted mean of the image centres interpolates between them.
    Measured against the simulated truth (``experiments/join3d/run.py`` on lyso_rotation,
    σ_M = 0.15°, 0.5°/image, 90 images; docs/refinement.md) the rms centroid error is
    0.38 / 0.12 / 0.10 / 0.13 frames for spots on 1 / 2 / 3 / ≥ 4 images (rule: 0.29 / 0.14 /
    0.096 / 0.096): beyond 3 images the wider rocking curve of such spots (near the rotation
    axis) spreads the photons thinner and the error stops falling."""
    n = np.clip(np.asarray(n_images, np.float64), 1.0, CENTROID_MAX_IMAGES)
    return 1.0 / (np.sqrt(12.0) * n)


def _rotation_inputs(state: ProcessState, use_3d: bool = True):
    """(geometry, x, y, candidate mask, axis, φ (rad), frame, σ_frame) of the sweep's spots,
    all of one shape: the 3D spots (m,) when the state has them (``use_3d``), else the
    per-image spot lists (n, S) with each image's centre angle.

    3D spots that touch the first or last selected image are left out (their rocking
    curve is cut by the sweep's end, which biases the φ centroid), unless that leaves
    fewer than half of them."""
    from jfx.physics import rotation as rot

    ix = state.indexing
    geo = ix.geometry
    indices = np.asarray(state.selection.indices)
    axis = np.asarray(geo.goniometer.axis, dtype=np.float64)
    s3 = state.spots3d
    if use_3d and s3 is not None and s3.n:
        x = np.asarray(s3.x_px, np.float64)
        y = np.asarray(s3.y_px, np.float64)
        frame = np.asarray(s3.frame, np.float64)
        pk = np.isfinite(x) & np.isfinite(y) & np.isfinite(frame)
        inner = pk & (s3.first_image > indices.min()) & (s3.last_image < indices.max())
        if inner.sum() >= 0.5 * pk.sum():
            pk = inner
        sig = centroid_sigma_frames(np.asarray(s3.last_image) - np.asarray(s3.first_image) + 1)
    else:
        x = np.asarray(state.spots.x_px, np.float64)
        y = np.asarray(state.spots.y_px, np.float64)
        pk = ix.spots_of_lattice(0) & np.isfinite(x) & np.isfinite(y)
        frame = np.broadcast_to((indices.astype(np.float64) + 0.5)[:, None], x.shape)
        sig = np.full(x.shape, SIGMA_ONE_IMAGE)
    phi = rot.image_angles(geo, frame)
    return geo, x, y, pk, axis, phi, frame, sig


def _assign(geo: Geometry, b0: np.ndarray, x, y, pk, axis, phi, tolerance: float):
    """Miller indices of the candidate spots ``pk`` under the model (geo, b0) and the
    inliers within ``tolerance`` (all arrays of one shape, φ per spot in rad)."""
    from jfx.physics import rotation as rot

    q = rot.to_angle_zero(rot.spot_vectors(geo, np.where(pk, x, 0.0), np.where(pk, y, 0.0)),
                          axis, np.where(pk, phi, 0.0))
    h = q @ b0.T
    hkl = np.rint(h).astype(np.int32)
    return hkl, pk & (np.linalg.norm(h - hkl, axis=-1) < tolerance)


def refine_sweep(state: ProcessState, settings: ProcessSettings,
                 tick: Callable[[int], None] = _no_tick) -> RefinementTable:
    """Scan-static refinement of the sweep (two macro-cycles), then scan-varying blocks.
    ``tick(n)``: progress, :data:`SWEEP_STEPS` in all."""
    from jfx.models.lattice import Lattice
    from jfx.refine.outliers import residual_outliers
    from jfx.refine.refine import RefineSpots, refine_rotation, refine_scan_varying

    sg = settings.crystal.space_group
    solver = settings.refine.solver
    geo, x, y, pk, axis, phi, frame, sig = _rotation_inputs(state)
    indices = np.asarray(state.selection.indices)
    phi_scale = _phi_scale(geo, sig)
    geo_r, b0 = geo, np.asarray(state.indexing.basis0, np.float64)
    for _ in range(2):
        hkl, inl = _assign(geo_r, b0, x, y, pk, axis, phi, settings.index.tolerance)
        spots = RefineSpots.create(hkl, x, y, frame=frame, valid=cap_spots(inl))
        res = refine_rotation(spots, geo_r, Lattice(basis=b0, space_group=sg), settings.refine,
                              solver=solver, phi_scale_px=phi_scale)
        geo_r = Geometry(beam=res.geometry.beam, detector=res.geometry.detector,
                         goniometer=geo.goniometer)
        b0 = np.asarray(res.basis)
        tick(1)
    n_out, rmsd_all = 0, None
    prob = settings.refine.outlier_probability
    if prob is not None and int(res.status) <= 1:
        # DIALS-style centroid outlier rejection on the last macro-cycle's residuals, then
        # one more scan-static refinement on the spots kept
        used = np.asarray(spots.valid, bool).reshape(-1)
        out = residual_outliers(np.asarray(res.residuals)[used], prob)
        if out.any():
            keep = used.copy()
            keep[np.flatnonzero(used)[out]] = False
            res2 = refine_rotation(
                RefineSpots.create(hkl, x, y, frame=frame, valid=keep.reshape(np.shape(x))),
                geo_r, Lattice(basis=b0, space_group=sg), settings.refine, solver=solver,
                phi_scale_px=phi_scale)
            if int(res2.status) <= 1:
                n_out = int(out.sum())
                rmsd_all = (float(res.rmsd_px), float(res.rmsd_phi_deg))
                res = res2
                geo_r = Geometry(beam=res.geometry.beam, detector=res.geometry.detector,
                                 goniometer=geo.goniometer)
                b0 = np.asarray(res.basis)
    tick(1)
    edges = sv_basis = None
    inc = abs(float(geo.goniometer.increment_rad))
    if (settings.refine.scan_varying_deg is not None and inc > 0
            and "lattice.orientation" in settings.refine.free):
        # blocks of scan_varying_deg, each block's orientation on all of its inlier spots
        # (the model of the last macro-cycle), detector and cell fixed
        block = max(1, int(round(settings.refine.scan_varying_deg / np.degrees(inc))))
        sv = refine_scan_varying(
            RefineSpots.create(hkl, x, y, frame=frame, valid=inl), geo_r,
            Lattice(basis=b0, space_group=sg), block,
            n_images=(int(indices.min()), int(indices.max())), solver=solver,
            phi_scale_px=phi_scale)
        edges, sv_basis = np.asarray(sv.edges), np.asarray(sv.basis)
    tick(1)
    return RefinementTable(mode="rotation", geometry=geo_r, images=np.arange(len(indices)),
                           basis=b0, status=np.array([int(res.status)], np.int32),
                           rmsd_px=float(res.rmsd_px), rmsd_phi_deg=float(res.rmsd_phi_deg),
                           refined=int(int(res.status) == 0), scan_varying_edges=edges,
                           scan_varying_basis=sv_basis, n_spots=int(res.n_spots),
                           n_outliers=n_out, rmsd_all=rmsd_all)


def refine_rescue(state: ProcessState, settings: ProcessSettings) -> RefinementTable | None:
    """The geometry refined on the symmetry-free lattice of
    :func:`jfx.pipeline.index_stage.run_unconstrained` (scan-static, triclinic cell, ``-r``
    free parameters but the distance: with a free triclinic cell it is degenerate with the
    cell scale over a short sweep — measured 80.8 → 81.4 mm for a true 80.0; the final,
    symmetry-constrained refinement frees it). None when it fails."""
    from jfx.models.lattice import Lattice
    from jfx.refine.refine import RefineSpots, refine_rotation

    if state.indexing is None or state.indexing.basis0 is None:
        return None
    geo, x, y, pk, _, _, frame, _ = _rotation_inputs(state, use_3d=False)
    ix = state.indexing
    spots = RefineSpots.create(ix.hkl, x, y, frame=frame, valid=cap_spots(pk))
    free = tuple(p for p in settings.refine.free if p != "detector.distance_mm")
    rs = dataclasses.replace(settings.refine, free=free, scan_varying_deg=None)
    try:
        r = refine_rotation(spots, geo, Lattice(basis=ix.basis0, space_group=None), rs,
                            solver=settings.refine.solver)
    except ValueError:
        return None
    if int(r.status) > 1:
        return None
    g = Geometry(beam=r.geometry.beam, detector=r.geometry.detector,
                 goniometer=geo.goniometer)
    return RefinementTable(mode="rotation", geometry=g, images=np.arange(len(pk)),
                           basis=np.asarray(r.basis), status=np.array([int(r.status)], np.int32),
                           rmsd_px=float(r.rmsd_px), refined=int(int(r.status) == 0))


def run(state: ProcessState, settings: ProcessSettings, ctx: RunContext) -> ProcessState:
    """Refine the geometry on the indexed spots (nothing with ``-r none`` or when nothing
    was indexed). The indexing table's mode ``unconstrained`` selects the rescue."""
    ix = state.indexing
    if not enabled(settings) or ix is None:
        return state
    t0 = time.perf_counter()
    if ix.mode == "unconstrained":
        with ctx.bar("refinement", 1) as bar:
            table = refine_rescue(state, settings)
            if bar is not None:
                bar.update(1)
    elif ix.basis0 is not None and ix.geometry.is_rotation:
        with ctx.bar("refinement", SWEEP_STEPS) as bar:
            table = refine_sweep(state, settings, bar.update if bar is not None else _no_tick)
    elif ix.n_indexed:
        with ctx.bar("refinement", STILLS_STEPS) as bar:
            try:
                table = refine_stills_pooled(state, settings,
                                             bar.update if bar is not None else _no_tick,
                                             mesh=ctx.mesh)
            except ValueError:
                table = None
    else:
        table = None
    return dataclasses.replace(state, refinement=table).with_time(
        "refine", time.perf_counter() - t0)
