"""Integration stage: predict the reflections of the indexed images with the refined model
and integrate them in a second streamed pass over the frames.

The integrator is built once by the ``integrate`` settings
(``settings.integrate.create(...)``, e.g. summation + profile fitting,
:class:`jfx.integrate.integrator.SummationIntegrator`) and called on every frame.
Stills: each indexed image's reflections inside the Ewald-offset envelope
(:func:`jfx.integrate.predict.predict_still`), integrated on that image, the matched indexed spot as the observed centroid. Rotation: every event of
the sweep (:func:`jfx.integrate.predict.predict_rotation`, per scan-varying block when
refined so), integrated on each image it spans, the partials combined by
:func:`jfx.integrate.summation.combine_partials`. The frames of a chunk run concurrently in
a thread pool (``integrate.threads``); the profile fits of a rotation sweep
(reference profiles, :mod:`jfx.integrate.reference`) pool the strong
reflections of every frame integrated so far, the current chunk included; stills use their
own.

Adds to the state: ``reflections`` (:class:`jfx.models.reflections.Reflections`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jfx.config import ProcessSettings
from jfx.models.geometry import Geometry
from jfx.models.reflections import ReflectionFlag as F
from jfx.models.reflections import Reflections
from jfx.pipeline.context import RunContext
from jfx.integrate.predict import detector_d_min, observed_centroids
from jfx.pipeline.state import ProcessState, RockingWidth

MIN_PARTIAL_FRACTION = 0.02
"""Rotation partials below this recorded fraction are not integrated (4M lysozyme, 0.5°/image:
21 % of the rows, 0.43 % of the intensity)."""

STILLS_MOSAICITY_DEG = 0.1
"""σ_M of the stills prediction envelope when ``integrate.mosaicity_deg`` is unset."""

ROTATION_MOSAICITY_FALLBACK_DEG = 0.1
"""σ_M of a rotation sweep when it cannot be estimated (too few indexed passages)."""


@dataclasses.dataclass(frozen=True)
class IntegrationSummary:
    """Integration summary (console).

    Attributes:
        n_images: images integrated; n_reflections: rows of the reflection table;
        n_integrated: rows with a summation intensity; mean_i_over_sigma: their mean I/σ;
        n_overloaded: integrated rows flagged ``OVERLOADED``; n_masked: integrated rows
        flagged ``MASKED_FRACTION`` (both left out of scaling by default).
    """

    n_images: int
    n_reflections: int
    n_integrated: int
    mean_i_over_sigma: float
    n_overloaded: int = 0
    n_masked: int = 0
    rocking_width: RockingWidth | None = None

    def lines(self) -> list[str]:
        out = [(f"integration: {self.n_integrated} of {self.n_reflections} predicted "
                f"reflections integrated on {self.n_images} images, <I/sigma> "
                f"{self.mean_i_over_sigma:.2f}; {self.n_overloaded} overloaded, "
                f"{self.n_masked} masked beyond the limit")]
        w = self.rocking_width
        if w is not None:
            how = {"setting": "integrate.mosaicity_deg",
                   "partials": f"fitted to the partials of {w.n_used} reflections",
                   "spots": f"from {w.n_used} strong-spot passages",
                   "fallback": "default: too few strong-spot passages"}[w.source]
            out.append(f"integration: mosaicity sigma_M {w.sigma_deg:.3f} deg ({how}; frames "
                       f"within {w.window_deg:.3f} deg x n_sigma integrated)")
        return out


def summary(state: ProcessState) -> IntegrationSummary | None:
    """The integration summary (None when integration did not run)."""
    t = state.reflections
    if t is None:
        return None
    good = np.isfinite(t.int_sum) & (t.int_sum_var > 0)
    n_int = int(good.sum())
    isig = float(np.mean(t.int_sum[good] / np.sqrt(t.int_sum_var[good]))) if n_int \
        else float("nan")
    n_img = (state.n_images if state.is_rotation
             else int(np.sum(state.indexing.indexed)) if state.indexing is not None else 0)
    flags = np.asarray(t.flags, np.uint32)
    def count(f):
        return int(np.sum(good & ((flags & np.uint32(int(f))) != 0)))

    return IntegrationSummary(n_images=n_img, n_reflections=t.n, n_integrated=n_int,
                              mean_i_over_sigma=isig, n_overloaded=count(F.OVERLOADED),
                              n_masked=count(F.MASKED_FRACTION),
                              rocking_width=state.rocking_width)


def enabled(settings: ProcessSettings) -> bool:
    return bool(settings.integrate.enabled)


def _stream(ctx: RunContext, images: np.ndarray, pool: Any,
            begin: Callable[[int, np.ndarray], tuple[Any, Any]],
            finish: Callable[[Any, Any], None], pool_reference: bool) -> None:
    """Stream ``images`` in chunks; the frames of a chunk run concurrently in ``pool``, in two
    phases: ``begin(image, frame)`` → (profile-reference deposit or None, state), then
    ``finish(state, reference)``. With ``pool_reference`` (rotation) the reference of a frame
    is the sum of the deposits of every frame up to and including it, added in frame order;
    else each frame's own. The reference every frame uses is therefore fixed by the frame
    order alone — not by thread timing, the batch size (``general.batch_size``) or the
    device — so runs repeat bit for bit and do not depend on the batch."""
    if images.size == 0:
        return
    batch = max(1, int(ctx.batch_size))
    total = None

    def run(fn, jobs):
        if pool is None or len(jobs) < 2:
            return [fn(*job) for job in jobs]
        return [f.result() for f in [pool.submit(fn, *job) for job in jobs]]

    with ctx.bar("integration", len(images)) as bar:
        for idx, frames in ctx.source.iter_chunks(images, chunk_size=batch,
                                                  workers=ctx.workers, skip_unreadable=True):
            outs = run(begin, [(int(j), frame) for j, frame in zip(np.asarray(idx), frames)])
            if pool_reference:  # frame j: the deposits of frames ≤ j, in frame order
                refs = []
                for dep, _ in outs:
                    if dep is not None:
                        total = dep + total
                    refs.append(total)
            else:
                refs = [dep for dep, _ in outs]
            run(finish, [(st, ref) for (_, st), ref in zip(outs, refs)])
            if hasattr(bar, "update"):
                bar.update(len(idx))


def _stills(state: ProcessState, settings: ProcessSettings, ctx: RunContext, integ: Any,
            pool: Any, d_min: float) -> Reflections | None:
    from jfx.integrate.predict import predict_still

    ix, ig = state.indexing, settings.integrate
    sg = settings.crystal.space_group
    sel, basis, geoms = state.still_models()
    if sel.size == 0:
        return None
    indices = np.asarray(state.selection.indices)
    xs = np.asarray(state.spots.x_px, np.float64)[sel]
    ys = np.asarray(state.spots.y_px, np.float64)[sel]
    ok = ix.spots_of_lattice(0)[sel] & np.isfinite(xs) & np.isfinite(ys)
    hkl = ix.hkl[sel]
    mos = STILLS_MOSAICITY_DEG if ig.mosaicity_deg is None else ig.mosaicity_deg
    preds = {int(indices[i]): (k, predict_still(
        geoms[k], basis[k], d_min, mosaicity_deg=mos, n_sigma=ig.n_sigma,
        space_group=sg)) for k, i in enumerate(sel)}
    parts: dict[int, Reflections] = {}

    def begin(image: int, frame: np.ndarray) -> tuple[Any, Any]:
        k, pr = preds[image]
        res, gathered, dep = integ.begin(frame, pr.x_px, pr.y_px, pr.d_A)
        return dep, (image, k, pr, res, gathered)

    def finish(st: Any, reference: Any) -> None:
        image, k, pr, res, gathered = st  # stills: every image its own reference profiles
        prf = integ.finish(gathered, reference)
        t = Reflections.empty(pr.n)
        flags = np.asarray(res.flags, np.uint32) | np.uint32(int(F.PREDICTED))
        cols = dict(hkl=np.asarray(pr.hkl, np.int32), image=np.full(pr.n, image, np.int32),
                    image_first=np.full(pr.n, image, np.int32),
                    image_last=np.full(pr.n, image, np.int32),
                    ewald_offset_invA=pr.eps_invA, predicted_x=pr.x_px, predicted_y=pr.y_px,
                    d_A=pr.d_A, partiality=pr.partiality, lp=pr.polarization,
                    qe=pr.qe if ig.detector_efficiency else np.ones(pr.n),
                    int_sum=res.intensity, int_sum_var=res.variance,
                    background_mean=res.background)
        if prf is not None:
            cols["int_prf"], cols["int_prf_var"], cols["int_prf_var_bg"] = prf[:3]
            flags |= np.where(np.isfinite(prf[0]), np.uint32(int(F.INTEGRATED_PRF)),
                              np.uint32(0))
        ox, oy, hit = observed_centroids(pr.hkl, hkl[k], xs[k], ys[k], ok[k])
        cols["observed_x"], cols["observed_y"] = ox, oy
        flags |= np.where(hit, np.uint32(int(F.OBSERVED | F.INDEXED)), np.uint32(0))
        cols["flags"] = flags
        parts[image] = dataclasses.replace(t, **{c: np.asarray(v).astype(
            getattr(t, c).dtype, copy=False) for c, v in cols.items()})

    _stream(ctx, indices[sel], pool, begin, finish, pool_reference=False)
    return Reflections.concatenate([parts[i] for i in sorted(parts)])


def _window(state: ProcessState, settings: ProcessSettings, geo: Geometry) -> RockingWidth:
    """σ_M before integration: the setting, else from the indexed strong spots
    (:func:`jfx.integrate.mosaicity.mosaicity_from_spots`), else the fallback; the frames are
    integrated within ``n_sigma`` of :data:`jfx.integrate.mosaicity.WINDOW_FACTOR` × that
    estimate and σ_M is refitted to the partials afterwards (:func:`_refit_rocking`)."""
    from jfx.integrate.mosaicity import WINDOW_FACTOR, mosaicity_from_spots

    ig = settings.integrate
    if ig.mosaicity_deg is not None:
        return RockingWidth(float(ig.mosaicity_deg), "setting", float(ig.mosaicity_deg))
    sp, ix = state.spots, state.indexing
    est = None
    if sp is not None and ix is not None:
        est = mosaicity_from_spots(sp, ix.hkl, ix.spots_of_lattice(0), geo,
                                   getattr(settings.spotfind, "keep", ""))
    if est is None or not est.ok:
        s = ROTATION_MOSAICITY_FALLBACK_DEG
        return RockingWidth(s, "fallback", WINDOW_FACTOR * s, 0 if est is None else est.n_passages)
    return RockingWidth(est.sigma_deg, "spots", WINDOW_FACTOR * est.sigma_deg, est.n_passages)


def _refit_rocking(width: RockingWidth, pr: Any, rows: dict, r_flags: np.ndarray,
                   inv: np.ndarray, used: np.ndarray, n_sigma: float, osc_rad: float
                   ) -> tuple[RockingWidth, np.ndarray, np.ndarray]:
    """σ_M fitted to the integrated partials; returns (width, fraction, used) of every row:
    the recorded fractions recomputed with the fitted σ_M and only the rows within its
    ``n_sigma`` window (and ≥ :data:`MIN_PARTIAL_FRACTION`) used."""
    from jfx.integrate.mosaicity import mosaicity_from_partials
    from jfx.physics.partiality import rotation_fraction

    if width.source == "setting":
        return width, pr.fraction, used
    ok = used & ((r_flags & np.uint32(int(F.INTEGRATED_SUM))) != 0)
    clean = ok & ((r_flags & np.uint32(int(F.OVERLAP | F.OVERLOADED | F.MASKED_PIXEL))) == 0)
    est = mosaicity_from_partials(inv, pr.image, rows["intensity"], rows["variance"], clean,
                                  used, pr.zeta, abs(math.degrees(osc_rad)))
    if not est.ok:
        return width, pr.fraction, used
    sig = min(est.sigma_deg, width.window_deg)
    start = pr.phi_rad - (pr.frame - pr.image) * osc_rad  # start angle of each row's image
    frac = np.asarray(rotation_fraction(pr.phi_rad, pr.zeta, math.radians(sig), start,
                                        start + osc_rad))
    half = n_sigma * math.radians(sig) / np.maximum(np.abs(pr.zeta), 1e-3) / abs(osc_rad)
    inside = (np.floor(pr.frame + half) >= pr.image) & (np.floor(pr.frame - half) <= pr.image)
    keep = used & inside & (frac >= MIN_PARTIAL_FRACTION)
    return (RockingWidth(sig, "partials", width.window_deg, est.n_passages), frac, keep)


def _rotation_predictions(state: ProcessState, settings: ProcessSettings, geo: Geometry,
                          d_min: float, sigma_m_deg: float):
    """Predicted partial rows of the sweep (per scan-varying block when refined so)."""
    from jfx.integrate.predict import predict_rotation

    ig, sg = settings.integrate, settings.crystal.space_group
    indices = np.asarray(state.selection.indices)
    rng = (int(indices.min()), int(indices.max()))
    kw = dict(mosaicity_deg=sigma_m_deg, n_sigma=ig.n_sigma, space_group=sg,
              min_fraction=MIN_PARTIAL_FRACTION)
    r = state.refinement
    if r is None or r.scan_varying_basis is None:
        return predict_rotation(geo, state.rotation_basis0(), d_min, rng, **kw)
    parts = []
    edges, bases = r.scan_varying_edges, r.scan_varying_basis
    for b in range(len(bases)):  # each block's images with the block's orientation
        lo, hi = max(int(edges[b]), rng[0]), min(int(np.ceil(edges[b + 1])) - 1, rng[1])
        if hi >= lo:
            parts.append(predict_rotation(geo, bases[b], d_min, (lo, hi), **kw))
    return type(parts[0])(**{f.name: np.concatenate([getattr(q, f.name) for q in parts])
                             for f in dataclasses.fields(parts[0])})


def _rotation(state: ProcessState, settings: ProcessSettings, ctx: RunContext,
              integ: Any, pool: Any, d_min: float) -> tuple[Reflections, RockingWidth]:
    from jfx.integrate.reference import combine_partials as combine_prf
    from jfx.integrate.summation import SummationResult, combine_partials

    geo = state.final_geometry
    indices = np.asarray(state.selection.indices)
    width = _window(state, settings, geo)
    pr = _rotation_predictions(state, settings, geo, d_min, width.window_deg)
    m = pr.n
    rows = {k: np.full(m, np.nan) for k in ("intensity", "variance", "background",
                                            "background_sigma", "masked_fraction", "prf",
                                            "prf_var", "prf_var_bg", "prf_var_pix0", "prf_s_a",
                                            "n_background")}
    r_flags = np.zeros(m, np.uint32)
    order = np.argsort(pr.image, kind="stable")
    img_sorted = pr.image[order]

    def begin(image: int, frame: np.ndarray) -> tuple[Any, Any]:
        a = np.searchsorted(img_sorted, image, "left")
        b = np.searchsorted(img_sorted, image, "right")
        sel = order[a:b]
        if sel.size == 0:
            return None, None
        res, gathered, dep = integ.begin(frame, pr.x_px[sel], pr.y_px[sel], pr.d_A[sel])
        for k in ("intensity", "variance", "background", "n_background"):
            rows[k][sel] = getattr(res, k)
        r_flags[sel] = np.asarray(res.flags, np.uint32)
        return dep, (sel, gathered)

    def finish(st: Any, reference: Any) -> None:
        if st is None:
            return
        sel, gathered = st
        prf = integ.finish(gathered, reference)
        if prf is not None:
            for k, col in zip(("prf", "prf_var", "prf_var_bg", "prf_var_pix0", "prf_s_a"), prf):
                rows[k][sel] = col

    _stream(ctx, indices, pool, begin, finish, pool_reference=True)
    used = np.isin(pr.image, indices)
    key = np.concatenate([pr.hkl.astype(np.int64), pr.event[:, None].astype(np.int64)], 1)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    ng = len(uniq)
    width, fraction, used = _refit_rocking(width, pr, rows, r_flags, inv, used,
                                           settings.integrate.n_sigma,
                                           float(geo.goniometer.increment_rad))
    summed = combine_partials(
        SummationResult(intensity=rows["intensity"], variance=rows["variance"],
                        background=rows["background"],
                        background_sigma=rows["background_sigma"],
                        masked_fraction=rows["masked_fraction"],
                        n_signal=np.zeros(m, np.int32), n_background=np.zeros(m, np.int32),
                        flags=r_flags),
        inv, fraction, used, ng, prf=(rows["prf"], rows["prf_var"], rows["prf_var_bg"]))
    # profile-fitted partials: combined with their fractions (3D-profile-like weighting) and
    # the background pooled over the partials' annuli (jfx.integrate.reference)
    p_int, p_var, p_var_bg = combine_prf(
        rows["prf"], rows["prf_var_pix0"], rows["prf_s_a"], rows["background"],
        rows["n_background"], fraction, inv,
        used & ((r_flags & np.uint32(int(F.INTEGRATED_SUM))) != 0), ng)
    has = np.isfinite(summed.prf_intensity)
    summed = dataclasses.replace(summed, prf_intensity=np.where(has, p_int, np.nan),
                                 prf_variance=np.where(has, p_var, np.nan),
                                 prf_variance_bg=np.where(has, p_var_bg, np.nan))
    rep = np.full(ng, -1, np.int64)
    rep[inv[::-1]] = np.arange(m)[::-1]  # one representative row per reflection
    ok = used & ((r_flags & np.uint32(int(F.INTEGRATED_SUM))) != 0)
    last = np.full(ng, -1, np.int64)
    np.maximum.at(last, inv, np.where(ok, pr.image, -1))
    first = np.full(ng, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, inv, np.where(ok, pr.image, np.iinfo(np.int64).max))
    got = summed.n_frames > 0
    centre = np.floor(pr.frame[rep]).astype(np.int64)
    # the image of a reflection lies among the images it was integrated on (a reflection
    # centred outside the processed images belongs to the nearest one it was recorded on;
    # it is a partial: PARTIAL whatever its recorded fraction)
    image = np.where(got, np.clip(centre, first, last), centre).astype(np.int32)
    outside = (centre < indices.min()) | (centre > indices.max())
    summed = dataclasses.replace(summed, flags=summed.flags | np.where(
        outside, np.uint32(int(F.PARTIAL)), np.uint32(0)))
    obs_x, obs_y, hit = _observed_rotation(state, indices, uniq[:, :3],
                                           np.where(got, first, image), np.where(got, last, image))
    f32 = np.float32
    t = Reflections(
        hkl=uniq[:, :3].astype(np.int32), image=image,
        image_first=np.where(got, first, image).astype(np.int32),
        image_last=np.where(got, last, image).astype(np.int32),
        predicted_x=pr.x_px[rep].astype(f32), predicted_y=pr.y_px[rep].astype(f32),
        predicted_phi_deg=np.degrees(pr.phi_rad[rep]).astype(f32),
        observed_x=obs_x, observed_y=obs_y,
        d_A=pr.d_A[rep].astype(f32), partiality=summed.fraction.astype(f32),
        lp=(pr.lorentz[rep] * pr.polarization[rep]).astype(f32), zeta=pr.zeta[rep].astype(f32),
        qe=(pr.qe[rep] if settings.integrate.detector_efficiency
            else np.ones(ng)).astype(f32),
        ewald_offset_invA=np.full(ng, np.nan, f32),
        int_sum=summed.intensity.astype(f32), int_sum_var=summed.variance.astype(f32),
        int_prf=summed.prf_intensity.astype(f32), int_prf_var=summed.prf_variance.astype(f32),
        background_mean=summed.background.astype(f32),
        int_prf_var_bg=summed.prf_variance_bg.astype(f32),
        flags=(summed.flags | np.uint32(int(F.PREDICTED))
               | np.where(hit, np.uint32(int(F.OBSERVED | F.INDEXED)), np.uint32(0))
               ).astype(np.uint32))
    return t.take(np.isin(t.image, indices) | got), width


def _hkl_key(hkl: np.ndarray) -> np.ndarray:
    h = np.asarray(hkl, np.int64) + 1024
    return (h[:, 0] << 22) | (h[:, 1] << 11) | h[:, 2]


def _observed_rotation(state: ProcessState, indices: np.ndarray, hkl: np.ndarray,
                       first: np.ndarray, last: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed centroids (px) of rotation reflections: the intensity-weighted mean position
    of the indexed strong spots with the reflection's hkl on the images ``first..last`` it
    was integrated on (the two events of an hkl never share an image). Returns (x, y,
    matched) of the ``len(hkl)`` reflections; NaN where no spot matched."""
    n = len(hkl)
    ox = np.full(n, np.nan, np.float32)
    oy = np.full(n, np.nan, np.float32)
    hit = np.zeros(n, bool)
    sp, ix = state.spots, state.indexing
    if sp is None or ix is None or n == 0:
        return ox, oy, hit
    xs = np.asarray(sp.x_px, np.float64)
    ys = np.asarray(sp.y_px, np.float64)
    ok = ix.spots_of_lattice(0) & np.isfinite(xs) & np.isfinite(ys)
    rows, cols = np.nonzero(ok)
    if rows.size == 0:
        return ox, oy, hit
    s_img = np.asarray(indices)[rows]
    s_key = _hkl_key(np.asarray(ix.hkl)[rows, cols])
    w = np.maximum(np.asarray(sp.intensity, np.float64)[rows, cols], 0.0) + 1e-6
    r_key = _hkl_key(hkl)
    order = np.argsort(r_key, kind="stable")
    sk = r_key[order]
    lo = np.searchsorted(sk, s_key, "left")
    hi = np.searchsorted(sk, s_key, "right")
    match = np.full(rows.size, -1, np.int64)
    for j in range(int(np.max(hi - lo, initial=0))):
        has = (lo + j < hi) & (match < 0)
        cand = order[np.minimum(lo + j, n - 1)]
        inside = has & (first[cand] <= s_img) & (s_img <= last[cand])
        match[inside] = cand[inside]
    m = match >= 0
    sw = np.bincount(match[m], w[m], n)
    sx = np.bincount(match[m], w[m] * xs[rows, cols][m], n)
    sy = np.bincount(match[m], w[m] * ys[rows, cols][m], n)
    hit = sw > 0
    ox[hit] = sx[hit] / sw[hit]
    oy[hit] = sy[hit] / sw[hit]
    return ox, oy, hit


def run(state: ProcessState, settings: ProcessSettings, ctx: RunContext) -> ProcessState:
    """Predict and integrate the indexed images (nothing when nothing was indexed)."""
    ix = state.indexing
    if not enabled(settings) or ix is None or not ix.n_indexed:
        return state
    t0 = time.perf_counter()
    ig = settings.integrate
    geo = state.final_geometry
    d_min = ig.d_min_A if ig.d_min_A is not None else detector_d_min(geo)
    bc = np.asarray(geo.detector.beam_center_px, np.float64)
    integ = ig.create(ctx.pixel_mask, ctx.error_value, ctx.saturation_value,
                      beam_xy=(float(bc[0]), float(bc[1])), d_min_A=d_min)
    pool = (concurrent.futures.ThreadPoolExecutor(ig.threads, thread_name_prefix="integrate")
            if ig.threads > 1 else None)
    try:
        width = None
        if state.is_rotation and geo.is_rotation:
            table, width = _rotation(state, settings, ctx, integ, pool, d_min)
        else:
            table = _stills(state, settings, ctx, integ, pool, d_min)
    finally:
        if pool is not None:
            pool.shutdown()
    return dataclasses.replace(state, reflections=table, rocking_width=width).with_time(
        "integrate", time.perf_counter() - t0)
