"""Artefact filters of the spot finder (host numpy; applied per frame by
:meth:`jfx.spotfind.find.ThresholdSpotFinder.select`).

Real frames carry strong-pixel groups that are not Bragg spots: single hot pixels and zingers,
Poisson tails of a high background, the edge of the beamstop shadow and of its arm, and
direct-beam (parasitic) scatter around the beamstop. These filters follow the spot filters of
``dials.find_spots`` (Winter et al. 2018, Acta Cryst. D74, 85; DIALS ``filter.*``
parameters): a minimum spot size, the peak-to-centroid distance (``max_separation``, 2 px in
DIALS) and a background-gradient test; the beam guard replaces the untrusted beamstop region
that DIALS users mask by hand (``dials.generate_mask``). Rules and defaults: docs/spotfinding.md,
"Artefact filters".

* :func:`peak_separation`: distance (px) between a spot's brightest pixel and its centroid.
* :func:`background_step`: the relative background step across a spot — medians of four
  ``(2·BOX_HALF+1)²`` (5 × 5 px) boxes at ±``STEP_OFFSET_PX`` px left/right and above/below the peak.
* :class:`BeamGuard`: the radius around the beam centre inside which the background differs
  from the background further out (shadow or scatter), from a per-frame radial median profile.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STEP_OFFSET_PX = 8
"""Distance (px) from the peak pixel to the centres of the four background boxes."""
BOX_HALF = 2
"""Half side (px) of each background box (5 × 5 px)."""
STEP_FLOOR_PHOTONS = 3.0
"""Floor (photons/px) of the background level in the relative step: on a near-zero background
the box medians differ by 1–2 photons by chance, which is no edge."""
GUARD_RING_PX = 3
"""Width (px) of the annuli of the beam guard's radial profile."""
GUARD_SAMPLES = 96
"""Pixels sampled per annulus (evenly spaced in the annulus's pixel list) for its median."""
GUARD_MIN_VALID = 16
"""Annuli with fewer valid sampled pixels are ignored (gaps, masked regions, frame edge)."""
GUARD_MIN_RUN = 2
"""The guard triggers only when at least this many annuli are anomalous."""
GUARD_MIN_SHADOW_LEVEL = 2.0
"""Photons/px: the shadow (low) test applies only when the reference background is at least
this (with a lower background a shadow cannot be told from noise; nothing is removed)."""
GUARD_ABS_PHOTONS = 2.0
"""Photons/px: an annulus is high only if its median exceeds the reference by at least this
much as well (frames with ~0 background)."""


def peak_separation(x_px: np.ndarray, y_px: np.ndarray, x_peak: np.ndarray,
                    y_peak: np.ndarray) -> np.ndarray:
    """(n,) float64 distance (px) between each centroid (x_px, y_px) and its brightest pixel
    (x_peak, y_peak) (pixel centres; first pixel centre = 0)."""
    return np.hypot(np.asarray(x_px, np.float64) - x_peak, np.asarray(y_px, np.float64) - y_peak)


def _box_medians(frame: np.ndarray, mask: np.ndarray, error_value: int | None,
                 saturation_value: float | None, cx: np.ndarray, cy: np.ndarray,
                 half: int) -> np.ndarray:
    """(n,) float64 median of the valid, unsaturated pixels of the (2·half+1)² boxes centred
    on (cx, cy) (int (n,)); NaN where the box holds no such pixel (outside the frame,
    masked)."""
    ny, nx = frame.shape
    off = np.arange(-half, half + 1)
    yy = cy[:, None, None] + off[None, :, None]
    xx = cx[:, None, None] + off[None, None, :]
    inside = ((yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)).reshape(cx.size, -1)
    flat = (np.clip(yy, 0, ny - 1) * nx + np.clip(xx, 0, nx - 1)).reshape(cx.size, -1)
    raw = np.take(frame.reshape(-1), flat)
    ok = inside & ~np.take(np.asarray(mask).reshape(-1), flat)
    if error_value is not None:
        ok &= raw != error_value
    if saturation_value is not None:
        ok &= raw < saturation_value
    v = raw.astype(np.float32)
    out = np.full(cx.size, np.nan)
    full = ok.all(axis=1)
    if full.any():  # the common case: a plain median (np.nanmedian is ~10x slower)
        out[full] = np.median(v[full], axis=1)
    part = ~full & ok.any(axis=1)
    if part.any():
        out[part] = np.nanmedian(np.where(ok[part], v[part], np.nan), axis=1)
    return out


def background_step(frame: np.ndarray, mask: np.ndarray, x_peak: np.ndarray,
                    y_peak: np.ndarray, error_value: int | None = None,
                    saturation_value: float | None = None, offset: int = STEP_OFFSET_PX,
                    half: int = BOX_HALF) -> np.ndarray:
    """(n,) float64 relative background step across each spot.

    With B_l, B_r, B_u, B_d the medians of the valid pixels of the 5 × 5 px boxes centred
    ``offset`` px left of, right of, above and below the peak pixel, and b = their mean:

        step = max(|B_r − B_l|, |B_d − B_u|) / max(b, STEP_FLOOR_PHOTONS).

    A box with no valid pixel is replaced by the opposite one (no step measured along that
    axis). Medians ignore the spot itself and neighbouring spots.

    Args:
        frame: (ny, nx) frame; mask: (ny, nx) bool, True = invalid pixel.
        x_peak, y_peak: (n,) int peak pixel of each spot.
        error_value, saturation_value: pixels equal to the error value or ≥ the saturation
            value are ignored (None = none).
    """
    xp = np.asarray(x_peak, np.int64)
    yp = np.asarray(y_peak, np.int64)
    if xp.size == 0:
        return np.zeros(0)
    cx = np.concatenate([xp - offset, xp + offset, xp, xp])
    cy = np.concatenate([yp, yp, yp - offset, yp + offset])
    m = _box_medians(frame, mask, error_value, saturation_value, cx, cy, half).reshape(4, -1)
    bl, br, bu, bd = m
    bl, br = np.where(np.isnan(bl), br, bl), np.where(np.isnan(br), bl, br)
    bu, bd = np.where(np.isnan(bu), bd, bu), np.where(np.isnan(bd), bu, bd)
    with np.errstate(invalid="ignore"):
        step = np.fmax(np.abs(br - bl), np.abs(bd - bu))
        b = np.nanmean(np.stack([bl, br, bu, bd]), axis=0)
    step = np.where(np.isnan(step), 0.0, step)
    b = np.where(np.isnan(b), 0.0, b)
    return step / np.maximum(b, STEP_FLOOR_PHOTONS)


@dataclasses.dataclass(frozen=True)
class BeamGuard:
    """Per-frame guard against the beamstop shadow and the direct-beam scatter around it.

    Radial profile: the beam-centred annuli of width :data:`GUARD_RING_PX` px out to
    ``1.5·radius_px``; each annulus's level is the median of up to :data:`GUARD_SAMPLES` of its
    valid pixels (evenly spaced in row-major order; error-valued and saturated pixels are
    ignored). The reference level P_ref is the median of the levels of the annuli in
    [radius_px, 1.5·radius_px). An annulus inside ``radius_px`` is *anomalous* when its level
    P(r) satisfies

        P(r) > factor · P_ref  and  P(r) > P_ref + 2 photons      (scatter / direct beam), or
        P(r) < P_ref / factor  and  P_ref ≥ 2 photons               (shadow).

    With at least :data:`GUARD_MIN_RUN` anomalous annuli the guard radius is the outer radius
    of the outermost one plus ``margin_px``; spots whose centroid lies inside it are dropped.
    Otherwise (no beamstop, smooth background) the radius is 0 and nothing is dropped.

    Attributes:
        center: (bx, by) beam centre (px).
        radius_px: search radius; factor: level ratio; margin_px: added to the radius.
        idx: (m, GUARD_SAMPLES) int64 flat pixel indices sampled in each annulus.
        r_outer: (m,) float64 outer radius of each annulus (px).
        n_search: annuli inside ``radius_px`` (the first n_search rows).
    """

    center: tuple[float, float]
    radius_px: float
    factor: float
    margin_px: float
    idx: np.ndarray
    r_outer: np.ndarray
    n_search: int

    @staticmethod
    def create(shape: tuple[int, int], center: tuple[float, float], pixel_mask: np.ndarray,
               radius_px: float, factor: float, margin_px: float) -> BeamGuard:
        """Precompute the sampled annuli (once per data set)."""
        ny, nx = shape
        bx, by = float(center[0]), float(center[1])
        rmax = 1.5 * float(radius_px)
        y0, y1 = max(0, int(np.floor(by - rmax))), min(ny, int(np.ceil(by + rmax)) + 1)
        x0, x1 = max(0, int(np.floor(bx - rmax))), min(nx, int(np.ceil(bx + rmax)) + 1)
        n_ann = int(np.ceil(rmax / GUARD_RING_PX))
        r_outer = GUARD_RING_PX * (np.arange(n_ann) + 1.0)
        n_search = int(np.ceil(radius_px / GUARD_RING_PX))
        idx = np.full((n_ann, GUARD_SAMPLES), -1, dtype=np.int64)
        if y1 > y0 and x1 > x0:
            yy, xx = np.mgrid[y0:y1, x0:x1]
            r = np.hypot(xx - bx, yy - by).reshape(-1)
            flat = (yy * nx + xx).reshape(-1)
            ok = ~np.asarray(pixel_mask, dtype=bool).reshape(-1)[flat] & (r < rmax)
            ring = (r[ok] // GUARD_RING_PX).astype(np.int64)
            flat = flat[ok]
            order = np.argsort(ring, kind="stable")
            ring, flat = ring[order], flat[order]
            bounds = np.searchsorted(ring, np.arange(n_ann + 1))
            for a in range(n_ann):
                lo, hi = bounds[a], bounds[a + 1]
                if hi - lo >= GUARD_MIN_VALID:
                    pick = lo + (np.arange(GUARD_SAMPLES) * (hi - lo)) // GUARD_SAMPLES
                    idx[a] = flat[pick]
        return BeamGuard(center=(bx, by), radius_px=float(radius_px), factor=float(factor),
                         margin_px=float(margin_px), idx=idx, r_outer=r_outer,
                         n_search=min(n_search, n_ann))

    def levels(self, frame: np.ndarray, error_value: int | None,
               saturation_value: float | None) -> np.ndarray:
        """(m,) float64 median level of each annulus (NaN: too few valid pixels)."""
        f = frame.reshape(-1)
        have = self.idx >= 0
        v = f[np.where(have, self.idx, 0)].astype(np.float64)
        ok = have.copy()
        if error_value is not None:
            ok &= v != error_value
        if saturation_value is not None:
            ok &= v < saturation_value
        v = np.where(ok, v, np.nan)
        out = np.full(v.shape[0], np.nan)
        enough = ok.sum(axis=1) >= GUARD_MIN_VALID
        if enough.any():
            out[enough] = np.nanmedian(v[enough], axis=1)
        return out

    def radius(self, frame: np.ndarray, error_value: int | None = None,
               saturation_value: float | None = None) -> float:
        """The guard radius (px) of one frame: 0 when the profile shows no shadow/scatter."""
        lev = self.levels(frame, error_value, saturation_value)
        ref_l = lev[self.n_search:]
        ref_l = ref_l[np.isfinite(ref_l)]
        if ref_l.size == 0:
            return 0.0
        ref = float(np.median(ref_l))
        p = lev[:self.n_search]
        with np.errstate(invalid="ignore"):
            high = (p > self.factor * ref) & (p > ref + GUARD_ABS_PHOTONS)
            low = (p < ref / self.factor) & (ref >= GUARD_MIN_SHADOW_LEVEL)
        bad = np.flatnonzero(high | low)
        if bad.size < GUARD_MIN_RUN:
            return 0.0
        return float(self.r_outer[bad[-1]] + self.margin_px)

    def inside(self, x_px: np.ndarray, y_px: np.ndarray, radius: float) -> np.ndarray:
        """(n,) bool: centroid closer than ``radius`` to the beam centre."""
        if radius <= 0:
            return np.zeros(np.shape(x_px), dtype=bool)
        return np.hypot(np.asarray(x_px) - self.center[0],
                        np.asarray(y_px) - self.center[1]) < radius
