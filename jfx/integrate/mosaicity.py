"""Mosaic spread σ_M of a rotation sweep, estimated from the indexed strong spots.

Pure core (numpy; no I/O). Used by the integration stage to size the rotation prediction
window (± ``n_sigma`` σ_M/|ζ| in φ) and the recorded fractions before anything is integrated:
a window sized from a guessed σ_M that is smaller than the crystal's cuts the tails of every
reflection off, by a fraction that depends on ζ — a per-reflection error no scale factor
removes (the summation CC to the true photons of a σ_M = 0.4° sweep integrated with
σ_M = 0.1° is 0.89).

Model (Kabsch 2010, Acta Cryst. D66, 133, eqs. 5–8; the rocking curve XDS and DIALS use): a
reflection passes the Ewald sphere at φ_c; the fraction of it recorded on image k, which
spans [φ_k, φ_k + Δφ), is

    f_k = Φ((φ_k + Δφ − φ_c) / σ_φ) − Φ((φ_k − φ_c) / σ_φ),   σ_φ = σ_M / |ζ|,

ζ = m₂ · (ŝ₁ × ŝ₀)/|ŝ₁ × ŝ₀| (m₂ the rotation axis). In units of images, s = σ_M /(|ζ| Δφ).

Data: the strong spots of every image with their Miller indices from indexing. Spots with the
same hkl on consecutive images are one passage of that reflection; its centre c is the
intensity-weighted mean image coordinate. A passage is used when the images just before and
just after it would have kept the reflection had it been found there (not beyond the sweep,
not cut by ``--max-spots``), so that it is known to be ≈ 0 there (:func:`passages`); the
observed fractions p_k = I_k / Σ I on its images and those two end images are compared with
the model fractions q_k = f_k / Σ f over the same images. σ_M minimises
Σ_passages Σ_k (p_k − q_k)² (a 1-D search on a log grid, refined by golden section).

What biases it: the spot finder's threshold cuts weak tails (→ σ_M a little low for weak
passages, hence only the strongest passages are used); errors of the centre c (→ high). The
integration stage multiplies nothing; it uses the estimate as is, with ``n_sigma`` = 3.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import ndtr

#: passages used: at most this many, the strongest first
MAX_PASSAGES = 4000
#: fewer usable passages than this → no estimate
MIN_PASSAGES = 20
#: search range of σ_M (deg)
SIGMA_RANGE_DEG = (0.005, 5.0)


@dataclasses.dataclass(frozen=True)
class MosaicityEstimate:
    """Result of :func:`estimate_mosaicity`.

    Attributes:
        sigma_deg: σ_M (deg), NaN when there were too few passages.
        n_passages: passages used in the fit.
        rms: root-mean-square residual of the fractions at the optimum.
    """

    sigma_deg: float
    n_passages: int
    rms: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.sigma_deg))


def passages(image: np.ndarray, hkl: np.ndarray, intensity: np.ndarray, d_A: np.ndarray,
             d_cut: np.ndarray, i_cut: np.ndarray) -> dict[str, np.ndarray]:
    """Group indexed spots into passages of one reflection through the Ewald sphere.

    A passage is only usable when it is known to end: on the image before its first and after
    its last image the reflection would have been kept had it been found there. With
    ``--max-spots`` an image's list may be truncated: ``d_cut``/``i_cut`` say which spots it
    keeps (d ≥ d_cut and I ≥ i_cut; 0 = every spot found, inf = unknown). Unknown ends (the
    sweep's edges, truncated neighbours) would make the passage look narrower than it is.

    Args:
        image: (m,) int image index of each indexed spot.
        hkl: (m, 3) int Miller indices.
        intensity: (m,) float background-subtracted photons (> 0 used).
        d_A: (m,) resolution of each spot (Å).
        d_cut, i_cut: (n_images_total,) per image index (see above); images outside the
            arrays are unknown.

    Returns dict of flat arrays over the (passage, image) cells of the usable passages:
    ``group`` (passage id, 0 … n_groups−1), ``image``, ``intensity`` (0 on the end images
    without the spot), ``spot`` (n_groups,) index (into the inputs) of the passage's
    strongest spot, and ``n_groups``.
    """
    empty = {"group": np.zeros(0, np.int64), "image": np.zeros(0, np.int64),
             "intensity": np.zeros(0), "spot": np.zeros(0, np.int64), "n_groups": 0}
    image = np.asarray(image, np.int64)
    hkl = np.asarray(hkl, np.int64)
    inten = np.asarray(intensity, np.float64)
    d_A = np.asarray(d_A, np.float64)
    idx = np.nonzero(inten > 0)[0]
    if idx.size == 0:
        return empty
    h, im = hkl[idx], image[idx]
    order = np.lexsort((im, h[:, 2], h[:, 1], h[:, 0]))
    idx, h, im = idx[order], h[order], im[order]
    new = np.ones(idx.size, bool)
    new[1:] = np.any(h[1:] != h[:-1], axis=1) | (im[1:] - im[:-1] > 1)
    gid = np.cumsum(new) - 1
    ng = int(gid[-1]) + 1
    # several spots of one reflection on one image (split spots): one cell, intensities summed
    key = gid * (int(im.max()) + 3) + im
    uk, first, inv = np.unique(key, return_index=True, return_inverse=True)
    g1, im1 = gid[first], im[first]
    I1 = np.bincount(inv.reshape(-1), weights=inten[idx], minlength=uk.size)
    tot = np.bincount(g1, weights=I1, minlength=ng)
    strongest = np.full(ng, -1, np.int64)
    best = np.full(ng, -np.inf)
    np.maximum.at(best, gid, inten[idx])
    hit = inten[idx] == best[gid]
    strongest[gid[hit]] = idx[hit]
    lo = np.full(ng, np.iinfo(np.int64).max)
    hi = np.full(ng, -1)
    np.minimum.at(lo, g1, im1)
    np.maximum.at(hi, g1, im1)
    d_cut = np.asarray(d_cut, np.float64)
    i_cut = np.asarray(i_cut, np.float64)
    d_g = d_A[strongest]

    def kept(k: np.ndarray, frac: float) -> np.ndarray:
        """Would the passage's reflection have been kept on image k with ``frac`` of the
        passage total (an upper bound on what an end image can hold)?"""
        inside = (k >= 0) & (k < d_cut.size)
        out = np.zeros(k.shape, bool)
        kk = k[inside]
        out[inside] = (d_g[inside] >= d_cut[kk]) & (frac * tot[inside] >= i_cut[kk])
        return out

    # an end image kept the reflection when it would have kept it at 5 % of the total
    ok = kept(lo - 1, 0.05) & kept(hi + 1, 0.05)
    if not ok.any():
        return empty
    remap = np.cumsum(ok) - 1
    cell = ok[g1]
    group = np.concatenate([remap[g1[cell]], remap[np.nonzero(ok)[0]], remap[np.nonzero(ok)[0]]])
    img = np.concatenate([im1[cell], lo[ok] - 1, hi[ok] + 1])
    val = np.concatenate([I1[cell], np.zeros(2 * int(ok.sum()))])
    return {"group": group, "image": img, "intensity": val, "spot": strongest[ok],
            "n_groups": int(ok.sum())}


def estimate_mosaicity(group: np.ndarray, image: np.ndarray, intensity: np.ndarray,
                       zeta: np.ndarray, osc_deg: float, min_intensity: float = 0.0
                       ) -> MosaicityEstimate:
    """σ_M by least squares on the observed image fractions of reflection passages.

    Args:
        group: (m,) passage id of each (passage, image) cell (0 … G−1).
        image: (m,) image index of the cell.
        intensity: (m,) photons recorded on that image (0 = a complete image without the spot).
        zeta: (G,) ζ of each passage.
        osc_deg: rotation per image Δφ (deg, > 0).
        min_intensity: passages with a total below this are not used.

    Returns:
        :class:`MosaicityEstimate` (σ_M in deg).
    """
    group = np.asarray(group, np.int64)
    image = np.asarray(image, np.float64)
    inten = np.asarray(intensity, np.float64)
    zeta = np.abs(np.asarray(zeta, np.float64))
    G = zeta.size
    if group.size == 0 or G == 0 or not osc_deg > 0:
        return MosaicityEstimate(math.nan, 0, math.nan)
    n_cells = np.bincount(group, minlength=G)
    tot = np.bincount(group, weights=inten, minlength=G)
    use_g = (n_cells >= 3) & (tot > max(min_intensity, 0.0)) & np.isfinite(zeta) & (zeta > 0.05)
    if use_g.sum() > MAX_PASSAGES:
        thr = np.sort(tot[use_g])[-MAX_PASSAGES]
        use_g &= tot >= thr
    n_use = int(use_g.sum())
    if n_use < MIN_PASSAGES:
        return MosaicityEstimate(math.nan, n_use, math.nan)
    cell = use_g[group]
    g, k, I = group[cell], image[cell], inten[cell]
    remap = np.cumsum(use_g) - 1
    g = remap[g]
    tot_g = np.bincount(g, weights=I, minlength=n_use)
    mean = np.bincount(g, weights=I * (k + 0.5), minlength=n_use) / tot_g
    p = I / tot_g[g]
    z = zeta[use_g][g]
    k_lo = np.full(n_use, np.inf)
    k_hi = np.full(n_use, -np.inf)
    np.minimum.at(k_lo, g, k)
    np.maximum.at(k_hi, g, k + 1.0)

    def fractions(s: np.ndarray, c: np.ndarray) -> np.ndarray:
        f = ndtr((k + 1.0 - c[g]) / s) - ndtr((k - c[g]) / s)
        norm = np.bincount(g, weights=f, minlength=n_use)
        return f / np.maximum(norm[g], 1e-300)

    def cost(log_s: float) -> float:
        s = math.exp(log_s) / osc_deg / z  # width in images
        # centre: the one whose binned mean equals the observed binned mean (the plain
        # intensity-weighted mean is biased towards the image centre for narrow curves)
        a, b = k_lo.copy(), k_hi.copy()
        for _ in range(24):
            c = 0.5 * (a + b)
            m = np.bincount(g, weights=fractions(s, c) * (k + 0.5), minlength=n_use)
            low = m < mean
            a = np.where(low, c, a)
            b = np.where(low, b, c)
        q = fractions(s, 0.5 * (a + b))
        return float(np.sum((p - q) ** 2))

    grid = np.linspace(math.log(SIGMA_RANGE_DEG[0]), math.log(SIGMA_RANGE_DEG[1]), 61)
    c = np.array([cost(x) for x in grid])
    j = int(np.argmin(c))
    a, b = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
    phi = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = b - phi * (b - a), a + phi * (b - a)
    f1, f2 = cost(x1), cost(x2)
    for _ in range(40):
        if f1 < f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - phi * (b - a)
            f1 = cost(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + phi * (b - a)
            f2 = cost(x2)
    best = 0.5 * (a + b)
    return MosaicityEstimate(math.exp(best), n_use,
                             math.sqrt(cost(best) / max(k.size, 1)))


#: the frames integrated lie within ``n_sigma`` × this × the strong-spot estimate of σ_M: the
#: spot estimate is low (threshold-cut tails: 0.26° for a true 0.40° on a jfx.sim sweep), the
#: partials then give σ_M without that bias
WINDOW_FACTOR = 2.0
#: reflections used by :func:`mosaicity_from_partials`: total I/σ at least this
MIN_I_OVER_SIGMA_PARTIALS = 10.0


def mosaicity_from_spots(spots, hkl: np.ndarray, own: np.ndarray, geometry, keep: str
                         ) -> MosaicityEstimate:
    """σ_M from the indexed strong spots of a sweep (before integration).

    Args:
        spots: host :class:`jfx.models.spots.SpotList` of the sweep's images.
        hkl: (n, S, 3) Miller indices of the spots; own: (n, S) bool spots of the crystal.
        geometry: the (refined) :class:`jfx.models.geometry.Geometry` with a goniometer.
        keep: the spot finder's keep rule under ``--max-spots`` (``lowest_resolution`` |
            ``strongest``; anything else: a truncated image's list counts as unknown).
    """
    from jfx.physics.diffraction import pixel_to_lab, zeta

    images = np.asarray(spots.image, np.int64)
    valid = np.asarray(spots.valid, bool)
    r, c = np.nonzero(np.asarray(own, bool) & valid)
    if r.size == 0:
        return MosaicityEstimate(math.nan, 0, math.nan)
    n_tot = int(images.max()) + 2
    d_cut, i_cut = np.full(n_tot, np.inf), np.full(n_tot, np.inf)
    full = np.asarray(spots.n_found) <= spots.max_spots
    d_all = np.where(valid, np.asarray(spots.d_A, np.float64), np.inf).min(axis=1)
    i_all = np.where(valid, np.asarray(spots.intensity, np.float64), np.inf).min(axis=1)
    d_cut[images], i_cut[images] = 0.0, 0.0
    if keep == "lowest_resolution":
        d_cut[images[~full]] = d_all[~full]
    elif keep == "strongest":
        i_cut[images[~full]] = i_all[~full]
    else:
        d_cut[images[~full]] = np.inf
    pa = passages(images[r], np.asarray(hkl)[r, c], np.asarray(spots.intensity)[r, c],
                  np.asarray(spots.d_A)[r, c], d_cut, i_cut)
    if pa["n_groups"] == 0:
        return MosaicityEstimate(math.nan, 0, math.nan)
    rep = pa["spot"]
    x = np.asarray(spots.x_px, np.float64)[r[rep], c[rep]]
    y = np.asarray(spots.y_px, np.float64)[r[rep], c[rep]]
    s1 = np.asarray(pixel_to_lab(geometry.detector, geometry.beam, x, y), np.float64)
    gon = geometry.goniometer
    z = np.asarray(zeta(gon.axis, geometry.beam.s0, s1), np.float64)
    return estimate_mosaicity(pa["group"], pa["image"], pa["intensity"], z,
                              abs(math.degrees(float(gon.increment_rad))))


def mosaicity_from_partials(group: np.ndarray, image: np.ndarray, intensity: np.ndarray,
                            variance: np.ndarray, clean: np.ndarray, used: np.ndarray,
                            zeta: np.ndarray, osc_deg: float) -> MosaicityEstimate:
    """σ_M fitted to the summation intensities of the partials (after integration).

    Uses the reflections all of whose used rows are integrated and clean (``clean``: no
    overlap, overload or masked pixel) with Σ I / √Σ var ≥
    :data:`MIN_I_OVER_SIGMA_PARTIALS`: their per-image fractions I_k / Σ I (negative tails
    included, nothing is cut by a threshold) against the rocking curve
    (:func:`estimate_mosaicity`).

    Args:
        group: (m,) reflection index of each partial row; image: (m,) its image.
        intensity, variance: (m,) summation intensity and variance (NaN: not integrated).
        clean: (m,) bool row integrated without problems; used: (m,) bool row integrated.
        zeta: (m,) ζ of the row's reflection.
        osc_deg: rotation per image (deg).
    """
    g = np.asarray(group, np.int64)
    used = np.asarray(used, bool)
    ng = int(g.max()) + 1 if g.size else 0
    if ng == 0:
        return MosaicityEstimate(math.nan, 0, math.nan)
    bad = np.bincount(g, weights=(used & ~np.asarray(clean, bool)).astype(float), minlength=ng)
    I = np.where(used, np.asarray(intensity, np.float64), 0.0)
    V = np.where(used, np.asarray(variance, np.float64), 0.0)
    I, V = np.nan_to_num(I), np.nan_to_num(V)
    tot = np.bincount(g, weights=I, minlength=ng)
    var = np.bincount(g, weights=V, minlength=ng)
    good_g = (bad == 0) & (var > 0) & (tot > MIN_I_OVER_SIGMA_PARTIALS * np.sqrt(np.maximum(var, 0)))
    cell = used & good_g[g]
    if not cell.any():
        return MosaicityEstimate(math.nan, 0, math.nan)
    remap = np.cumsum(good_g) - 1
    z_g = np.zeros(int(good_g.sum()))
    z_g[remap[g[cell]]] = np.asarray(zeta, np.float64)[cell]
    return estimate_mosaicity(remap[g[cell]], np.asarray(image)[cell], I[cell], z_g, osc_deg)
