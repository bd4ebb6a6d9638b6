"""The ``refine`` verb: geometry refinement of stills (per image) and rotation scans.

Stills: every image is its own least-squares problem — its own crystal (orientation and
cell) AND its own detector/beam parameters (beam centre, distance, tilts, wavelength, as far
as the preset frees them), all starting from the one input geometry. This mirrors
``jfjoch_process``, which refines each still independently; a jointly refined (shared)
detector is not done here. The problems are padded to fixed shapes — spots per image to a
bucket of 64/128/256/512 (multiples of 512 beyond), images to chunks of 1/8/64 — and solved
with one ``jax.vmap`` over the chunk, so each (image bucket, spot bucket) pair compiles once.
With a device mesh (``mesh``, :mod:`jfx.sharding`) the chunks are rounded up to multiples of
its devices and each is split over them.

Rotation: one scan-static crystal (basis at goniometer angle 0) and one detector/beam over
the whole sweep, from the (x, y, φ) of every indexed spot.

Pure core: no files, no logging, no printing.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass
from jfx.models.geometry import Geometry
from jfx.models.lattice import Lattice
from jfx.refine import params as P
from jfx.refine.residuals import (
    LOSSES,
    robust_weight,
    robustify,
    rotation_raw_residuals,
    still_raw_residuals,
)
from jfx.refine.settings import OrientationRefinement, RefineSettings
from jfx.sharding import replicate, round_up, shard_batch
from jfx.solvers import SOLVERS, solve

SPOT_BUCKETS = (64, 128, 256, 512)
IMAGE_CHUNKS = (1, 8, 64)
DEFAULT_MAX_ITER = {"lm": 50, "lbfgs": 300}


class RefineStatus(enum.IntEnum):
    """Per-problem outcome."""

    OK = 0  # converged
    NOT_CONVERGED = 1  # stopped at the iteration cap (parameters are still the best found)
    TOO_FEW_SPOTS = 2  # fewer usable spots than needed: parameters left at the start
    FAILED = 3  # non-finite result: parameters left at the start


@pytree_dataclass
class RefineSpots:
    """Indexed spots for refinement, padded (leading axes: stills (n_img, n); rotation (n,)).

    Attributes:
        hkl: (…, 3) int32 assigned Miller indices (in the basis' setting).
        x_px, y_px: (…,) float64 observed centroid (px; first pixel centre = 0).
        frame: (…,) float64 observed centroid frame coordinate (rotation; ignored for stills).
        valid: (…,) bool, the row is an indexed spot.
    """

    hkl: jnp.ndarray
    x_px: jnp.ndarray
    y_px: jnp.ndarray
    frame: jnp.ndarray
    valid: jnp.ndarray

    @staticmethod
    def create(hkl, x_px, y_px, frame=None, valid=None) -> RefineSpots:
        """Spots from host arrays; ``valid`` defaults to all-finite rows with hkl ≠ 0."""
        hkl = np.asarray(hkl)
        x = np.asarray(x_px, np.float64)
        y = np.asarray(y_px, np.float64)
        fr = np.zeros_like(x) if frame is None else np.asarray(frame, np.float64)
        if hkl.shape != x.shape + (3,) or y.shape != x.shape or fr.shape != x.shape:
            raise ValueError(f"spot arrays disagree in shape: hkl {hkl.shape}, x {x.shape}, "
                             f"y {y.shape}, frame {fr.shape}")
        ok = np.isfinite(x) & np.isfinite(y) & np.any(hkl != 0, axis=-1)
        if frame is not None:
            ok &= np.isfinite(fr)
        v = ok if valid is None else (np.asarray(valid, bool) & ok)
        return RefineSpots(hkl=np.where(v[..., None], hkl, 0).astype(np.int32),
                           x_px=np.where(v, x, 0.0), y_px=np.where(v, y, 0.0),
                           frame=np.where(v, fr, 0.0), valid=v)

    @staticmethod
    def from_spot_list(spots: Any, hkl, indexed=None) -> RefineSpots:
        """From a :class:`jfx.models.spots.SpotList` and per-spot hkl (n_img, max_spots, 3);
        ``indexed`` (n_img, max_spots) bool selects the indexed spots (default hkl ≠ 0)."""
        valid = np.asarray(spots.valid, bool)
        if indexed is not None:
            valid = valid & np.asarray(indexed, bool)
        return RefineSpots.create(hkl, spots.x_px, spots.y_px, spots.frame, valid)


@dataclasses.dataclass(frozen=True)
class RefineResult:
    """Refinement result.

    Stills (``n_img`` images): ``geometry`` leaves carry a leading image axis (e.g.
    ``detector.beam_center_px`` (n_img, 2), ``detector.distance_mm`` (n_img,)); ``basis``
    (n_img, 3, 3); per-image arrays (n_img,). Rotation: one Geometry, ``basis`` (3, 3) at
    goniometer angle 0, scalars.

    Attributes:
        geometry: refined Geometry (static fields and goniometer as the input).
        basis: refined real-space basis, rows a, b, c (Å), lab frame.
        rmsd_px: rms of the (x, y) residual vector length over the used spots (px); NaN
            for problems that were not refined (TOO_FEW_SPOTS, FAILED).
        rmsd_phi_deg: rms φ residual over the used spots (deg; rotation), else ``None``.
        n_used: spots that kept full weight under the robust loss (IRLS weight > 0.5).
        n_spots: valid indexed spots given.
        status: :class:`RefineStatus` values (int).
        iterations: solver iterations.
        params: the refined :class:`jfx.refine.params.RefineParams` (batched for stills).
        residuals: rotation: (N, 3) float64 raw residuals (Δx px, Δy px, Δφ rad) of every
            spot row (the given spots flattened; NaN for rows that are not valid) under the
            refined model; None for stills.
    """

    geometry: Geometry
    basis: np.ndarray
    rmsd_px: np.ndarray
    rmsd_phi_deg: np.ndarray | None
    n_used: np.ndarray
    n_spots: np.ndarray
    status: np.ndarray
    iterations: np.ndarray
    params: P.RefineParams
    residuals: np.ndarray | None = None


def _bucket(n: int, buckets=SPOT_BUCKETS) -> int:
    for b in buckets:
        if n <= b:
            return b
    return int(-(-n // buckets[-1]) * buckets[-1])


def _pad(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    width = [(0, 0)] * a.ndim
    width[axis] = (0, n - a.shape[axis])
    return np.pad(a, width)


def _compact(spots: RefineSpots, n: int):
    """Move the valid rows of every image to the front and pad/cut to ``n`` columns."""
    valid = np.asarray(spots.valid, bool)
    order = np.argsort(~valid, axis=1, kind="stable")
    take = lambda a: np.take_along_axis(np.asarray(a), order if np.ndim(a) == 2
                                        else order[..., None], axis=1)
    cols = [take(spots.hkl), take(spots.x_px), take(spots.y_px), take(spots.frame),
            take(valid)]
    m = cols[0].shape[1]
    if m < n:
        cols = [_pad(c, n, 1) for c in cols]
    return [c[:, :n] for c in cols]


def _check(settings: RefineSettings, solver: str, loss: str, huber_px: float) -> None:
    if not isinstance(settings, RefineSettings):
        raise TypeError("settings must be a RefineSettings")
    if solver not in SOLVERS:
        raise ValueError(f"unknown refinement solver {solver!r} (known: {', '.join(SOLVERS)})")
    if loss not in LOSSES:
        raise ValueError(f"unknown robust loss {loss!r} (known: {', '.join(LOSSES)})")
    if not (np.isfinite(huber_px) and huber_px > 0):
        raise ValueError(f"robust threshold must be > 0 px, got {huber_px}")


# ------------------------------------------------------------------------------------------
# stills
# ------------------------------------------------------------------------------------------


def _still_residual(params: P.RefineParams, template: Geometry, hkl: jnp.ndarray,
                    x: jnp.ndarray, y: jnp.ndarray, w: jnp.ndarray, k: jnp.ndarray,
                    loss: str) -> jnp.ndarray:
    return robustify(still_raw_residuals(params, template, hkl, x, y, w), w, loss, k)


@functools.partial(jax.jit, static_argnames=("mask", "solver", "max_iter", "tol", "loss"))
def _still_batch(params, template, hkl, x, y, w, k, *, mask, solver, max_iter, tol, loss):
    def one(p, h, xx, yy, ww):
        res = functools.partial(_still_residual, loss=loss)
        pr, info = solve(res, p, mask, (template, h, xx, yy, ww, k), solver, max_iter, tol)
        raw = still_raw_residuals(pr, template, h, xx, yy, ww)
        geom = P.to_geometry(pr, template)
        return pr, info, raw, geom, P.to_basis(pr)

    return jax.vmap(one)(params, hkl, x, y, w)


def refine_stills(spots: RefineSpots, geometry: Geometry, lattice: Lattice,
                  settings: RefineSettings, solver: str = "lm", *, loss: str = "huber",
                  huber_px: float = 1.0, max_iter: int | None = None,
                  tol: float | None = None, min_spots: int = 6,
                  mesh: Any = None) -> RefineResult:
    """Refine every still independently (see the module docstring).

    Args:
        spots: (n_img, n) indexed spots.
        geometry: start geometry (shared by all images; goniometer ignored).
        lattice: ``basis`` (n_img, 3, 3) or (3, 3) (same start for all images); its space
            group sets the cell constraint (``None`` → triclinic).
        settings: which leaves are free (``-r``).
        solver: ``lm`` | ``lbfgs``.
        loss: ``l2`` | ``huber`` | ``trimmed``; ``huber_px`` its threshold k (px).
        max_iter, tol: solver controls (``None`` = defaults per solver).
        min_spots: images with fewer valid spots (or fewer than ⌈free parameters/2⌉ + 1)
            are not refined (status TOO_FEW_SPOTS).
        mesh: a 1-D device mesh (:func:`jfx.sharding.batch_mesh`) the images of each chunk
            are split over (chunks rounded up to a multiple of its devices); None: the
            default device.
    Returns:
        :class:`RefineResult` with per-image arrays.
    """
    _check(settings, solver, loss, huber_px)
    max_iter = DEFAULT_MAX_ITER[solver] if max_iter is None else int(max_iter)
    hkl_all = np.asarray(spots.hkl)
    if hkl_all.ndim != 3:
        raise ValueError(f"still spots need shape (n_img, n, 3) hkl, got {hkl_all.shape}")
    n_img = hkl_all.shape[0]
    if n_img == 0:
        raise ValueError("no images to refine")
    basis = np.asarray(lattice.basis, np.float64)
    if basis.shape == (3, 3):
        basis = np.broadcast_to(basis, (n_img, 3, 3))
    if basis.shape != (n_img, 3, 3):
        raise ValueError(f"lattice basis shape {basis.shape} does not match {n_img} images")
    system = P.system_of_space_group(lattice.space_group)
    template = dataclasses.replace(geometry, goniometer=None)
    det, beam = P.from_geometry(template)
    crystals = [P.from_basis(b, system) for b in basis]
    params = P.RefineParams(
        detector=jax.tree_util.tree_map(lambda a: np.broadcast_to(a, (n_img,) + a.shape), det),
        beam=jax.tree_util.tree_map(lambda a: np.broadcast_to(a, (n_img,) + a.shape), beam),
        crystal=jax.tree_util.tree_map(lambda *a: np.stack(a), *crystals))
    p1 = P.RefineParams(detector=det, beam=beam, crystal=crystals[0])
    mask = P.free_mask(p1, settings)
    nfree = P.n_free(p1, mask)

    n_valid = np.asarray(spots.valid, bool).sum(axis=1)
    n_cols = _bucket(max(int(n_valid.max(initial=1)), 1))
    hkl, x, y, _, valid = _compact(spots, n_cols)
    enough = n_valid >= max(min_spots, nfree // 2 + 1)
    w = (valid & enough[:, None]).astype(np.float64)

    outs = []
    start = 0
    chunks = tuple(round_up(c, mesh) for c in IMAGE_CHUNKS)
    while start < n_img:
        rest = n_img - start
        chunk = next((c for c in chunks if rest <= c), chunks[-1])
        m = min(chunk, rest)
        # padded lanes repeat image `start` (valid numbers) with zero weights
        rows = np.concatenate([np.arange(start, start + m), np.full(chunk - m, start)])

        def padi(a, rows=rows):
            return np.asarray(a)[rows]

        wc = padi(w)
        wc[m:] = 0.0
        pc = jax.tree_util.tree_map(lambda a, f=padi: jnp.asarray(f(a)), params)
        pc, hc, xc, yc, wc = shard_batch((pc, jnp.asarray(padi(hkl)), jnp.asarray(padi(x)),
                                          jnp.asarray(padi(y)), jnp.asarray(wc)), mesh)
        tc, kc = replicate((template, jnp.asarray(huber_px)), mesh)
        out = _still_batch(pc, tc, hc, xc, yc, wc, kc,
                           mask=mask, solver=solver, max_iter=max_iter, tol=tol, loss=loss)
        outs.append(jax.tree_util.tree_map(lambda a, m=m: np.asarray(a)[:m], out))
        start += m
    pr, info, raw, geom, bas = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *outs)

    finite = np.all(np.isfinite(bas.reshape(n_img, -1)), axis=1) & np.isfinite(info.cost)
    status = np.where(np.asarray(info.converged), RefineStatus.OK, RefineStatus.NOT_CONVERGED)
    status = np.where(finite, status, RefineStatus.FAILED)
    status = np.where(enough, status, RefineStatus.TOO_FEW_SPOTS).astype(np.int32)
    keep = status <= RefineStatus.NOT_CONVERGED
    # images not refined keep their start values
    p_start = jax.tree_util.tree_map(np.asarray, params)
    pr = jax.tree_util.tree_map(
        lambda a, b: np.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), pr, p_start)
    # the start geometry of every image is the template (tilts 0)
    geom = jax.tree_util.tree_map(
        lambda a, b: np.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, np.asarray(b)),
        geom, template)
    bas = np.where(keep[:, None, None], bas, basis)

    norm = np.sqrt(np.sum(raw * raw, axis=-1))
    used = (w > 0) & (np.asarray(robust_weight(jnp.asarray(norm), loss, huber_px)) > 0.5)
    n_used = used.sum(axis=1)
    rmsd = np.sqrt(np.sum(np.where(used, norm ** 2, 0.0), axis=1) / np.maximum(n_used, 1))
    rmsd = np.where(n_used > 0, rmsd, np.nan)
    return RefineResult(geometry=geom, basis=bas, rmsd_px=rmsd, rmsd_phi_deg=None,
                        n_used=n_used.astype(np.int32), n_spots=n_valid.astype(np.int32),
                        status=status, iterations=np.asarray(info.iterations), params=pr)


# ------------------------------------------------------------------------------------------
# rotation
# ------------------------------------------------------------------------------------------


def _rotation_residual(params: P.RefineParams, template: Geometry, hkl: jnp.ndarray,
                       x: jnp.ndarray, y: jnp.ndarray, fr: jnp.ndarray, w: jnp.ndarray,
                       scale: jnp.ndarray, k: jnp.ndarray, loss: str) -> jnp.ndarray:
    raw = rotation_raw_residuals(params, template, hkl, x, y, fr, w)
    return robustify(raw, w, loss, k, scale)


@functools.partial(jax.jit, static_argnames=("mask", "solver", "max_iter", "tol", "loss"))
def _rotation_solve(params, template, hkl, x, y, fr, w, scale, k, *, mask, solver, max_iter,
                    tol, loss):
    res = functools.partial(_rotation_residual, loss=loss)
    pr, info = solve(res, params, mask, (template, hkl, x, y, fr, w, scale, k), solver,
                     max_iter, tol)
    raw = rotation_raw_residuals(pr, template, hkl, x, y, fr, w)
    return pr, info, raw, P.to_geometry(pr, template), P.to_basis(pr)


def refine_rotation(spots: RefineSpots, geometry: Geometry, lattice: Lattice,
                    settings: RefineSettings, solver: str = "lm", *, loss: str = "huber",
                    huber_px: float = 1.0, phi_scale_px: float | None = None,
                    max_iter: int | None = None, tol: float | None = None,
                    min_spots: int = 10) -> RefineResult:
    """Scan-static refinement of a rotation sweep (one crystal, one detector).

    Args:
        spots: indexed spots of the whole sweep, any leading shape (flattened), with frame.
        geometry: start geometry with a goniometer.
        lattice: ``basis`` (3, 3) at goniometer angle 0.
        phi_scale_px: px-equivalents per rad of φ residual (σ_xy / σ_φ): one number, or
            one per spot (an array of the spots' shape, e.g. from each 3D spot's centroid
            precision); default distance / pixel size (the arc length on the detector of
            1 rad at the beam-centre distance).
        Others as :func:`refine_stills`.
    Returns:
        :class:`RefineResult` with scalar entries.
    """
    _check(settings, solver, loss, huber_px)
    if geometry.goniometer is None:
        raise ValueError("rotation refinement needs a geometry with a goniometer")
    max_iter = DEFAULT_MAX_ITER[solver] if max_iter is None else int(max_iter)
    basis = np.asarray(lattice.basis, np.float64)
    if basis.shape != (3, 3):
        raise ValueError(f"rotation refinement needs one (3, 3) basis, got {basis.shape}")
    system = P.system_of_space_group(lattice.space_group)
    params = P.from_models(geometry, basis, system)
    mask = P.free_mask(params, settings)
    nfree = P.n_free(params, mask)
    hkl = np.asarray(spots.hkl).reshape(-1, 3)
    x = np.asarray(spots.x_px, np.float64).reshape(-1)
    y = np.asarray(spots.y_px, np.float64).reshape(-1)
    fr = np.asarray(spots.frame, np.float64).reshape(-1)
    valid = np.asarray(spots.valid, bool).reshape(-1)
    n_valid = int(valid.sum())
    n = _bucket(max(n_valid, 1), (512,))
    idx = np.flatnonzero(valid)
    col = lambda a: _pad(a[idx], n, 0)
    enough = n_valid >= max(min_spots, nfree // 3 + 1)
    w = col(valid).astype(np.float64) * float(enough)
    if phi_scale_px is None:
        phi_scale_px = float(geometry.detector.distance_mm) / float(
            geometry.detector.pixel_size_mm[0])
    ps = np.broadcast_to(np.asarray(phi_scale_px, np.float64),
                         np.shape(spots.x_px)).reshape(-1)
    if not np.all(np.isfinite(ps[valid]) & (ps[valid] > 0)):
        raise ValueError("phi_scale_px must be finite and > 0")
    ps = np.where(col(valid), col(ps), 1.0)
    scale = jnp.asarray(np.stack([np.ones(n), np.ones(n), ps], axis=1))  # (n, 3)
    pr, info, raw, geom, bas = _rotation_solve(
        params, geometry, jnp.asarray(col(hkl)), jnp.asarray(col(x)), jnp.asarray(col(y)),
        jnp.asarray(col(fr)), jnp.asarray(w), scale, jnp.asarray(huber_px), mask=mask,
        solver=solver, max_iter=max_iter, tol=tol, loss=loss)
    raw = np.asarray(raw)
    bas = np.asarray(bas)
    ok_f = bool(np.all(np.isfinite(bas)) and np.isfinite(float(info.cost)))
    status = RefineStatus.OK if bool(info.converged) else RefineStatus.NOT_CONVERGED
    if not ok_f:
        status = RefineStatus.FAILED
    if not enough:
        status = RefineStatus.TOO_FEW_SPOTS
    if status > RefineStatus.NOT_CONVERGED:
        pr, geom, bas = params, geometry, basis
    xy = np.sqrt(np.sum(raw[:, :2] ** 2, axis=1))
    full = np.sqrt(np.sum((raw * np.asarray(scale)) ** 2, axis=1))
    used = (w > 0) & (np.asarray(robust_weight(jnp.asarray(full), loss, huber_px)) > 0.5)
    n_used = int(used.sum())
    rmsd = float(np.sqrt(np.sum(xy[used] ** 2) / n_used)) if n_used else float("nan")
    rmsd_phi = (float(np.rad2deg(np.sqrt(np.mean(raw[used, 2] ** 2)))) if n_used
                else float("nan"))
    resid = np.full((valid.size, 3), np.nan)
    if status <= RefineStatus.NOT_CONVERGED:
        resid[idx] = raw[:n_valid]
    return RefineResult(geometry=jax.tree_util.tree_map(np.asarray, geom), basis=bas,
                        rmsd_px=np.asarray(rmsd), rmsd_phi_deg=np.asarray(rmsd_phi),
                        n_used=np.asarray(n_used), n_spots=np.asarray(n_valid),
                        status=np.asarray(int(status)),
                        iterations=np.asarray(info.iterations),
                        params=jax.tree_util.tree_map(np.asarray, pr), residuals=resid)


@dataclasses.dataclass(frozen=True)
class ScanVaryingResult:
    """Block-wise (piecewise-constant) crystal orientation over a sweep.

    Attributes:
        edges: (n_blocks + 1,) block boundaries in image (frame) coordinates; block b covers
            frames [edges[b], edges[b+1]).
        basis: (n_blocks, 3, 3) crystal basis at goniometer angle 0 in each block (Å).
        status: (n_blocks,) :class:`RefineStatus` of each block (blocks that could not be
            refined keep the scan-static basis).
        rmsd_px: (n_blocks,) rmsd (px) of each block's spots after its refinement.
        n_spots: (n_blocks,) spots in each block.
    """

    edges: np.ndarray
    basis: np.ndarray
    status: np.ndarray
    rmsd_px: np.ndarray
    n_spots: np.ndarray

    def block_of(self, frame: np.ndarray) -> np.ndarray:
        """Block index of frame coordinates (clipped to the sweep)."""
        return np.clip(np.searchsorted(self.edges, np.asarray(frame), side="right") - 1, 0,
                       len(self.basis) - 1)


def refine_scan_varying(spots: RefineSpots, geometry: Geometry, lattice: Lattice,
                        block_images: int, *, n_images: tuple[int, int],
                        solver: str = "lm", min_spots: int = 20,
                        **kwargs: Any) -> ScanVaryingResult:
    """Scan-varying crystal orientation: the sweep is cut into blocks of ``block_images``
    images and each block's orientation is refined on its own spots (detector, cell and
    goniometer fixed at the scan-static values in ``geometry`` / ``lattice``), as DIALS'
    scan-varying refinement does with a smoother (Waterman et al. 2016, Acta Cryst. D72,
    558–575); here piecewise constant per block.

    Args:
        spots: the sweep's indexed spots with frame coordinates.
        geometry, lattice: the scan-static result (``lattice.basis`` at angle 0).
        block_images: images per block (≥ 1).
        n_images: (first, last) image of the sweep.
        min_spots: blocks with fewer valid spots keep the scan-static basis.
    Returns:
        :class:`ScanVaryingResult`.
    """
    first, last = int(n_images[0]), int(n_images[1])
    block_images = max(int(block_images), 1)
    edges = np.arange(first, last + 1 + block_images, block_images, dtype=np.float64)
    edges[-1] = max(edges[-1], last + 1.0)
    edges = edges[: np.searchsorted(edges, last + 1.0) + 1]
    nb = len(edges) - 1
    fr = np.asarray(spots.frame, np.float64).reshape(-1)
    valid = np.asarray(spots.valid, bool).reshape(-1)
    hkl = np.asarray(spots.hkl).reshape(-1, 3)
    x = np.asarray(spots.x_px, np.float64).reshape(-1)
    y = np.asarray(spots.y_px, np.float64).reshape(-1)
    b0 = np.asarray(lattice.basis, np.float64)
    basis = np.repeat(b0[None], nb, axis=0)
    status = np.full(nb, int(RefineStatus.TOO_FEW_SPOTS), np.int32)
    rmsd = np.full(nb, np.nan)
    counts = np.zeros(nb, np.int32)
    orient = OrientationRefinement()
    blk = np.clip(np.searchsorted(edges, fr, side="right") - 1, 0, nb - 1)
    ps = kwargs.pop("phi_scale_px", None)
    if ps is not None and np.ndim(ps) > 0:  # one per spot: follow the block's spots
        ps = np.broadcast_to(np.asarray(ps, np.float64), np.shape(spots.x_px)).reshape(-1)
    for b in range(nb):
        sel = valid & (blk == b) & np.isfinite(fr)
        counts[b] = int(sel.sum())
        if counts[b] < min_spots:
            continue
        sub = RefineSpots.create(hkl[sel], x[sel], y[sel], frame=fr[sel])
        r = refine_rotation(sub, geometry, Lattice(basis=b0, space_group=lattice.space_group),
                            orient, solver, min_spots=min_spots,
                            phi_scale_px=ps[sel] if ps is not None and np.ndim(ps) else ps,
                            **kwargs)
        status[b] = int(r.status)
        if int(r.status) <= RefineStatus.NOT_CONVERGED:
            basis[b] = np.asarray(r.basis)
            rmsd[b] = float(r.rmsd_px)
    return ScanVaryingResult(edges=edges, basis=basis, status=status, rmsd_px=rmsd,
                             n_spots=counts)


def refine(spots: RefineSpots, geometry: Geometry, lattice: Lattice,
           settings: RefineSettings, solver: str = "lm", **kwargs: Any) -> RefineResult:
    """Geometry refinement: rotation (scan-static) when ``geometry`` has a goniometer,
    else per-image stills. See :func:`refine_stills` / :func:`refine_rotation`."""
    if geometry.goniometer is not None:
        return refine_rotation(spots, geometry, lattice, settings, solver, **kwargs)
    return refine_stills(spots, geometry, lattice, settings, solver, **kwargs)
