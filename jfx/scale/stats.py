"""Merging statistics per resolution shell (pure numpy + gemmi).

Definitions (``n`` = number of observations of a reflection, ``I_i`` its observations):

* Shells are equal-volume in reciprocal space: equally spaced in 1/d³ between d_max and d_min
  (:func:`resolution_shells`).  A reflection belongs to shell ``j`` when
  ``edges[j+1] ≤ d < edges[j]`` (the lowest-resolution shell also includes ``d = d_max``).
* The unit of "a reflection" is the unique ASU index; in anomalous mode it is the pair
  (ASU index, Friedel sign), centric reflections counting once (as XDS with
  ``FRIEDEL'S_LAW=FALSE``).  N_unique, multiplicity, completeness, ⟨I/σ⟩, CC1/2, R_meas and
  R_pim use this unit.
* ``n_obs`` — observations in the shell, **including** observations from rejected images
  (Jungfraujoch reports N_obs that way); everything else excludes rejected images.
* ``multiplicity`` = (observations used) / N_unique.
* ``completeness`` = N_unique / N_possible, N_possible from ``gemmi.make_miller_array``
  (systematic absences excluded) in the same d range; in anomalous mode acentric
  reflections count twice (I(+), I(−)), centric once.  A fraction in [0, 1].
* ``mean_i_over_sigma`` = mean over the merged reflections of ⟨I⟩/σ(⟨I⟩) (inverse-variance
  weighted merge, σ = 1/√Σσ_i⁻²).
* ``cc_half`` — Pearson correlation of the two half-dataset means (inverse-variance weighted;
  the caller assigns whole images to halves) over reflections present in both halves
  (Karplus & Diederichs, Science 336, 1030 (2012)); ``cc_star`` = √(2 CC½ / (1 + CC½))
  (same paper; NaN for CC½ ≤ 0).
* ``r_meas`` = Σ_h √(n/(n−1)) Σ_i |I_i − Ī_h| / Σ_h Σ_i I_i (NaN where Σ I ≤ 0) and ``r_pim`` the same with
  √(1/(n−1)), Ī_h the unweighted mean of the observations, sums over reflections with n ≥ 2
  (Diederichs & Karplus, Nat. Struct. Biol. 4, 269 (1997); Weiss, J. Appl. Cryst. 34, 130
  (2001)).
* ``cc_anom`` (anomalous mode only) — Pearson correlation of the half-dataset anomalous
  differences ΔI = I(+) − I(−) over acentric reflections having both signs in both halves.
* Anomalous statistics (anomalous mode only; NaN, and ``n_anom_pairs`` 0, otherwise).  I(±)
  and σ(I±) are the inverse-variance weighted means of the used observations of each Friedel
  half, as written to the merged file; a *Bijvoet pair* is an acentric reflection with both
  I(+) and I(−) measured.  Centric reflections take no part (their Friedel mates are the same
  measurement).

  - ``n_anom_pairs`` — number of Bijvoet pairs.
  - ``anom_completeness`` = n_anom_pairs / N_possible,acentric, the possible acentric ASU
    reflections (gemmi, absences excluded) in the same d range: cctbx
    ``anomalous_completeness`` as ``dials.scale``/``dials.merge`` report it, AIMLESS
    "AnoCmp"; PDBx ``_reflns_shell.pdbx_percent_possible_anomalous`` as a fraction.
  - ``anom_multiplicity`` — mean number of observations per measured Friedel half (I(+) or
    I(−)) of acentric reflections, AIMLESS "AnoMlt".  (DIALS prints as "Anomalous
    multiplicity" the anomalous-mode ``multiplicity`` column, which includes centrics.)
  - ``dano_over_sigma`` — mean over Bijvoet pairs of |ΔI|/σ(ΔI), ΔI = I(+) − I(−),
    σ(ΔI) = √(σ(I+)² + σ(I−)²): PDBx ``_reflns_shell.pdbx_absDiff_over_sigma_anomalous``.  On
    intensities, not amplitudes (XDS's "SigAno" is on F); pure noise gives √(2/π) ≈ 0.80.
    (``dials.merge``'s "dI/s(dI)" is the ratio of means ⟨|ΔI|⟩/⟨σ(ΔI)⟩, overall only.)
  - ``r_anom`` = Σ|I(+) − I(−)| / Σ ½(I(+) + I(−)) over Bijvoet pairs (cctbx ``r_anom``;
    NaN where the denominator is ≤ 0).
* ``cc_ref`` (reference given) — Pearson correlation of the merged mean intensity (both
  Friedel mates merged) with the reference intensity over common ASU reflections.
* Correlations need ≥ 3 pairs and non-zero variance, else NaN; ratios with an empty
  denominator are NaN.
* Wilson B (overall): merged ⟨I⟩ of reflections with d < 4.5 Å (in the statistics d range)
  divided by the symmetry enhancement factor ε (gemmi ``epsilon_factor_without_centering``)
  are binned in 20 equal-volume shells; bins with ≥ 5 reflections and positive mean are
  fitted by unweighted least squares ln⟨I/ε⟩ = ln K − 2B (sin θ/λ)² = ln K − B/(2d²)
  (Wilson, Nature 150, 152 (1942)), with 1/d² averaged per bin.  NaN with fewer than 3 bins.
* ``suggested_d_min_A`` — the resolution where a fit of CC½ against s = 1/d² crosses
  :data:`CC_HALF_LIMIT` (0.3), as ``dials.estimate_resolution`` does by default: CC½ in bins
  of equal numbers of reflections with both half-set means, fitted (unweighted least
  squares) by CC½(s) = ½(1 − tanh((s − s0)/r)) (the form Aimless uses, after Ed Pozharski;
  Evans & Murshudov 2013, Acta Cryst. D69, 1204), so d = 1/√(s0 + r·artanh(1 − 2·0.3))
  (:func:`fit_cc_half_resolution`). Advisory: clamped to the data's d range; NaN when the fit
  fails or there are too few pairs. ``--scaling-high-resolution`` alone cuts the data.
"""

from __future__ import annotations

import gemmi
import numpy as np

from jfx.models.merged import INT_COLUMNS, STAT_COLUMNS, WILSON_D_MAX_A, MergingStatistics
from jfx.scale.merge import merge_intensities
from jfx.symmetry import groups
from jfx.symmetry.asu import AsuMap, _unique_rows, d_spacing, to_asu

CC_HALF_LIMIT = 0.3
"""CC½ at which the suggested high-resolution limit is placed (dials.estimate_resolution)."""
CC_FIT_MIN_PER_BIN = 20
"""Reflection pairs per bin of the CC½ fit (at least; at most :data:`CC_FIT_MAX_BINS`)."""
CC_FIT_MAX_BINS = 50

WILSON_BINS = 20
WILSON_MIN_PER_BIN = 5
MIN_CC_PAIRS = 3


def resolution_shells(d_A: np.ndarray, n_shells: int = 10, d_min: float | None = None,
                      d_max: float | None = None) -> np.ndarray:
    """Edges of ``n_shells`` equal-volume resolution shells (equally spaced in 1/d³).

    Args:
        d_A: (m,) resolutions (Å) of the reflections; used for the limits not given.
        n_shells: number of shells (≥ 1).
        d_min, d_max: high/low resolution limits (Å); default min/max of finite ``d_A``.

    Returns:
        (n_shells + 1,) float64 d values (Å), decreasing: ``edges[0] = d_max``,
        ``edges[-1] = d_min``.
    """
    n_shells = int(n_shells)
    if n_shells < 1:
        raise ValueError(f"n_shells must be >= 1, got {n_shells}")
    d = np.asarray(d_A, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d) & (d > 0)]
    if d_min is None:
        if d.size == 0:
            raise ValueError("no finite resolutions to derive d_min from")
        d_min = float(d.min())
    if d_max is None:
        if d.size == 0:
            raise ValueError("no finite resolutions to derive d_max from")
        d_max = float(d.max())
    if not (0 < d_min <= d_max):
        raise ValueError(f"need 0 < d_min <= d_max, got d_min={d_min}, d_max={d_max}")
    s3 = np.linspace(d_max ** -3.0, d_min ** -3.0, n_shells + 1)
    edges = s3 ** (-1.0 / 3.0)
    edges[0], edges[-1] = d_max, d_min
    return edges


def shell_index(d_A: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shell of each resolution for ``edges`` from :func:`resolution_shells`; −1 outside."""
    d = np.asarray(d_A, dtype=np.float64)
    s3_edges = np.asarray(edges, dtype=np.float64) ** -3.0
    with np.errstate(divide="ignore"):
        s3 = d ** -3.0
    j = np.searchsorted(s3_edges, s3, side="right") - 1
    n = len(edges) - 1
    tol = 1e-9
    j = np.where(np.abs(s3 - s3_edges[-1]) <= tol * s3_edges[-1], n - 1, j)  # d == d_min
    inside = (j >= 0) & (j < n) & np.isfinite(d)
    return np.where(inside, j, -1)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation coefficient; NaN with < 3 pairs or zero variance."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < MIN_CC_PAIRS:
        return float("nan")
    dx = x - x.mean()
    dy = y - y.mean()
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if not den > 0:
        return float("nan")
    return float((dx * dy).sum() / den)


def cc_star(cc_half: np.ndarray | float) -> np.ndarray:
    """CC* = √(2 CC½ / (1 + CC½)) (Karplus & Diederichs 2012); NaN where CC½ ≤ 0 or NaN."""
    cc = np.asarray(cc_half, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(2.0 * cc / (1.0 + cc))
    return np.where(cc > 0, out, np.nan)


def _as_reference(reference) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(reference, dict):
        keys = list(reference.keys())
        hkl = np.array(keys, dtype=np.int64).reshape(-1, 3)
        val = np.array([reference[k] for k in keys], dtype=np.float64)
    else:
        try:
            hkl, val = reference
        except (TypeError, ValueError):
            raise ValueError("reference must be a dict hkl->I or a pair (hkl (r,3), I (r,))") \
                from None
        hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
        val = np.asarray(val, dtype=np.float64).reshape(-1)
    if hkl.shape[0] != val.shape[0]:
        raise ValueError("reference hkl and I have different lengths")
    return hkl, val


def _keys(hkl: np.ndarray) -> np.ndarray:
    h = np.asarray(hkl, dtype=np.int64)
    off = 1 << 20
    return ((h[:, 0] + off) << 42) | ((h[:, 1] + off) << 21) | (h[:, 2] + off)


def reference_on_asu(unique_hkl: np.ndarray, reference, space_group: int | str) -> np.ndarray:
    """Reference intensities for ``unique_hkl`` (m, 3) (ASU indices); NaN where absent.

    The reference indices are mapped to the ASU of ``space_group`` and duplicates (symmetry
    equivalents, Friedel mates) are averaged.  ``reference``: dict hkl → I or (hkl, I).
    """
    rh, rv = _as_reference(reference)
    ok = np.isfinite(rv)
    rh, rv = rh[ok], rv[ok]
    out = np.full(unique_hkl.shape[0], np.nan)
    if rh.shape[0] == 0 or unique_hkl.shape[0] == 0:
        return out
    ra, _ = to_asu(rh, space_group)
    ru, inv = _unique_rows(ra)
    cnt = np.bincount(inv, minlength=ru.shape[0])
    mean = np.bincount(inv, weights=rv, minlength=ru.shape[0]) / cnt
    rk = _keys(ru)  # sorted (np.unique order)
    uk = _keys(unique_hkl)
    pos = np.clip(np.searchsorted(rk, uk), 0, len(rk) - 1)
    hit = rk[pos] == uk
    out[hit] = mean[pos[hit]]
    return out


def _possible_counts(cell, sg: gemmi.SpaceGroup, edges: np.ndarray,
                     anomalous: bool) -> tuple[np.ndarray, np.ndarray]:
    """Possible (non-absent) reflections per shell + overall (last): the units of the table
    (acentric twice in anomalous mode) and the acentric ASU reflections."""
    d_min = float(edges[-1])
    uc = gemmi.UnitCell(*[float(x) for x in cell])
    hkl = np.asarray(gemmi.make_miller_array(uc, sg, d_min * (1 - 1e-6), 0.0, True))
    hkl = hkl[np.any(hkl != 0, axis=1)]
    d = d_spacing(hkl, cell)
    j = shell_index(d, edges)
    centric = np.zeros(hkl.shape[0], bool)
    if hkl.shape[0]:
        centric = np.asarray(sg.operations().centric_flag_array(hkl.astype(np.int32)), bool)
    weight = np.where(centric, 1.0, 2.0) if anomalous else np.ones(hkl.shape[0])
    ns = len(edges) - 1
    inside = j >= 0
    per = np.bincount(j[inside], weights=weight[inside], minlength=ns)
    acen = np.bincount(j[inside], weights=(~centric[inside]).astype(float), minlength=ns)
    return (np.append(per, per.sum()).astype(np.int64),
            np.append(acen, acen.sum()).astype(np.int64))


def _anomalous_rows(mean: np.ndarray, sig: np.ndarray, nobs: np.ndarray, centric: np.ndarray,
                    j_refl: np.ndarray, possible_acentric: np.ndarray,
                    cols: dict[str, np.ndarray]) -> None:
    """Fill the anomalous columns (module docstring) of ``cols`` in place.

    Args:
        mean, sig, nobs: (2m,) merged I, σ and observation count of each (reflection, sign)
            unit (even: I(+), odd: I(−)).
        centric: (m,) bool; j_refl: (m,) shell of each reflection (−1 outside).
        possible_acentric: (n_shells + 1,) possible acentric reflections per row.
    """
    ns = len(possible_acentric) - 1
    ip, im = mean[0::2], mean[1::2]
    n_p, n_m = nobs[0::2], nobs[1::2]
    acen = ~np.asarray(centric, bool)
    pair = acen & (n_p > 0) & (n_m > 0)
    dano = np.where(pair, ip - im, 0.0)
    with np.errstate(invalid="ignore"):
        sdano = np.sqrt(sig[0::2] ** 2 + sig[1::2] ** 2)
        ratio = np.where(pair, np.abs(dano) / sdano, 0.0)
    avg = np.where(pair, 0.5 * (ip + im), 0.0)
    for row in range(ns + 1):
        sel = (j_refl >= 0) if row == ns else (j_refl == row)
        sp = sel & pair
        n_pairs = int(sp.sum())
        cols["n_anom_pairs"][row] = n_pairs
        if possible_acentric[row] > 0:
            cols["anom_completeness"][row] = n_pairs / possible_acentric[row]
        halves = np.concatenate([n_p[sel & acen], n_m[sel & acen]])
        halves = halves[halves > 0]
        if halves.size:
            cols["anom_multiplicity"][row] = halves.mean()
        if n_pairs:
            cols["dano_over_sigma"][row] = ratio[sp].mean()
            den = avg[sp].sum()
            if den > 0:
                cols["r_anom"][row] = np.abs(dano[sp]).sum() / den


def _wilson_b(d: np.ndarray, i_mean: np.ndarray, eps: np.ndarray, d_min: float,
              d_max: float) -> float:
    ok = np.isfinite(i_mean) & np.isfinite(d) & (d < WILSON_D_MAX_A)
    if not ok.any():
        return float("nan")
    top = min(WILSON_D_MAX_A, d_max, float(d[ok].max()))
    lo = max(d_min, float(d[ok].min()))
    if not lo < top:
        return float("nan")
    edges = resolution_shells(d[ok], WILSON_BINS, lo, top)
    j = shell_index(d[ok], edges)
    v = i_mean[ok] / eps[ok]
    x = 1.0 / d[ok] ** 2
    xs, ys = [], []
    for b in range(WILSON_BINS):
        sel = j == b
        if sel.sum() >= WILSON_MIN_PER_BIN:
            m = v[sel].mean()
            if m > 0:
                xs.append(x[sel].mean())
                ys.append(np.log(m))
    if len(xs) < 3:
        return float("nan")
    slope, _ = np.polyfit(np.asarray(xs), np.asarray(ys), 1)
    return float(-2.0 * slope)


def _tanh_cc(s, s0, r):
    return 0.5 * (1.0 - np.tanh((s - s0) / r))


def fit_cc_half_resolution(d_star_sq: np.ndarray, cc_half: np.ndarray,
                           limit: float = CC_HALF_LIMIT) -> float:
    """Resolution (Å) where the fit CC½(s) = ½(1 − tanh((s − s0)/r)) crosses ``limit``.

    Args:
        d_star_sq: (k,) bin centres s = 1/d² (Å⁻²).
        cc_half: (k,) CC½ of the bins (NaN bins are ignored).
        limit: the CC½ of the limit (default 0.3).
    Returns:
        d = 1/√(s0 + r·artanh(1 − 2·limit)), clamped to the range of the bins given; NaN
        with fewer than 4 finite bins or when the fit fails.
    """
    from scipy.optimize import curve_fit

    s = np.asarray(d_star_sq, np.float64).reshape(-1)
    y = np.asarray(cc_half, np.float64).reshape(-1)
    ok = np.isfinite(s) & np.isfinite(y) & (s > 0)
    s, y = s[ok], y[ok]
    if s.size < 4:
        return float("nan")
    lo, hi = float(s.min()), float(s.max())
    p0 = (float(np.median(s)), max((hi - lo) / 4.0, 1e-6))
    try:
        (s0, r), _ = curve_fit(_tanh_cc, s, y, p0=p0,
                               bounds=([lo - 10 * (hi - lo), 1e-9], [hi + 10 * (hi - lo), np.inf]))
    except (RuntimeError, ValueError):
        return float("nan")
    sc = s0 + r * np.arctanh(1.0 - 2.0 * float(limit))
    if not np.isfinite(sc):
        return float("nan")
    sc = min(max(sc, lo), hi)
    return float(1.0 / np.sqrt(sc))


def _cc_half_bins(m0, m1, pair, d_refl) -> tuple[np.ndarray, np.ndarray]:
    """CC½ in bins of equal numbers of reflections with both half-set means: (s centres, CC)."""
    idx = np.flatnonzero(pair & np.isfinite(d_refl) & (d_refl > 0))
    nb = min(CC_FIT_MAX_BINS, idx.size // CC_FIT_MIN_PER_BIN)
    if nb < 4:
        return np.zeros(0), np.zeros(0)
    s = 1.0 / d_refl[idx] ** 2
    order = np.argsort(s, kind="stable")
    centres, ccs = [], []
    for part in np.array_split(order, nb):
        sel = idx[part]
        centres.append(float(np.mean(s[part])))
        ccs.append(pearson(m0[sel], m1[sel]))
    return np.asarray(centres), np.asarray(ccs)


def merging_statistics(asu: AsuMap, I: np.ndarray, sigma: np.ndarray,
                       image: np.ndarray | None, half: np.ndarray, cell, space_group: int | str,
                       *, anomalous: bool = False, n_shells: int = 10,
                       d_min: float | None = None, d_max: float | None = None,
                       reference=None, rejected_image_mask: np.ndarray | None = None
                       ) -> MergingStatistics:
    """Merging statistics per resolution shell and overall (definitions: module docstring).

    Args:
        asu: :class:`AsuMap` of the n observations.
        I, sigma: (n,) scaled intensities and σ.  Systematically absent observations, non-finite
            values and σ ≤ 0 are ignored.
        image: (n,) int image number of each observation (only needed with
            ``rejected_image_mask``).
        half: (n,) 0/1 half-dataset of each observation (assign whole images to halves).
        cell: (a, b, c, α, β, γ) Å, °.
        space_group: IT number or symbol (the group of ``asu``).
        anomalous: Friedel pairs separate (see module docstring); enables ``cc_anom``.
        n_shells: number of equal-volume shells.
        d_min, d_max: resolution limits (Å); default: the range of the observed reflections.
        reference: dict hkl → I or (hkl (r, 3), I (r,)) for ``cc_ref``.
        rejected_image_mask: bool array indexed by image number; True = image rejected.

    Returns:
        :class:`MergingStatistics`.
    """
    sg = groups.space_group(space_group)
    if sg.number != asu.space_group:
        raise ValueError(f"space group {sg.number} differs from the ASU map's {asu.space_group}")
    n = asu.n_obs
    I = np.asarray(I, np.float64).reshape(-1)
    sigma = np.asarray(sigma, np.float64).reshape(-1)
    half = np.asarray(half).reshape(-1)
    if I.shape[0] != n or sigma.shape[0] != n or half.shape[0] != n:
        raise ValueError(f"I, sigma and half must have {n} rows (one per observation)")
    cell = np.asarray(cell, np.float64).reshape(6)
    m = asu.n_refl
    d_refl = d_spacing(asu.unique_hkl, cell) if m else np.zeros(0)
    d_obs = d_refl[asu.refl] if n else np.zeros(0)

    valid = (~asu.absent) & np.isfinite(I) & np.isfinite(sigma) & (sigma > 0) & np.isfinite(d_obs)
    if not valid.any():
        raise ValueError("no valid observations for merging statistics")
    lo = float(d_obs[valid].min()) if d_min is None else float(d_min)
    hi = float(d_obs[valid].max()) if d_max is None else float(d_max)
    edges = resolution_shells(d_obs[valid], n_shells, lo, hi)
    ns = n_shells

    rejected = np.zeros(n, bool)
    n_rej_images = 0
    if rejected_image_mask is not None:
        mask = np.asarray(rejected_image_mask, bool).reshape(-1)
        n_rej_images = int(mask.sum())
        if image is None:
            raise ValueError("image numbers are needed with rejected_image_mask")
        img = np.asarray(image).reshape(-1).astype(np.int64)
        if img.shape[0] != n:
            raise ValueError(f"image must have {n} rows (one per observation)")
        if img.size and (img.min() < 0 or img.max() >= mask.shape[0]):
            raise ValueError("image numbers outside rejected_image_mask")
        rejected = mask[img]

    j_refl = shell_index(d_refl, edges)
    counted = valid & (j_refl[asu.refl] >= 0)
    used = counted & ~rejected

    # units: reflections, or (reflection, sign) pairs in anomalous mode
    if anomalous:
        unit, n_units = asu.refl_anom, 2 * m
        j_unit = np.repeat(j_refl, 2)
    else:
        unit, n_units = asu.refl, m
        j_unit = j_refl

    u, Iu, su = unit[used], I[used], sigma[used]
    mean, sig, nobs = merge_intensities(u, Iu, su, n_units)
    h0 = half[used] == 0
    m0, _, n0 = merge_intensities(u[h0], Iu[h0], su[h0], n_units)
    m1, _, n1 = merge_intensities(u[~h0], Iu[~h0], su[~h0], n_units)
    # unweighted means and absolute deviations for R_meas / R_pim
    cnt = np.bincount(u, minlength=n_units)
    sum_i = np.bincount(u, weights=Iu, minlength=n_units)
    with np.errstate(invalid="ignore", divide="ignore"):
        ubar = sum_i / cnt
    absdev = np.bincount(u, weights=np.abs(Iu - ubar[u]), minlength=n_units)
    with np.errstate(invalid="ignore", divide="ignore"):
        f_meas = np.where(cnt >= 2, np.sqrt(cnt / np.maximum(cnt - 1, 1)), 0.0)
        f_pim = np.where(cnt >= 2, np.sqrt(1.0 / np.maximum(cnt - 1, 1)), 0.0)
        ios = mean / sig

    # anomalous half-set differences (per reflection)
    if anomalous:
        a0, _, c0 = merge_intensities(asu.refl_anom[used][h0], Iu[h0], su[h0], 2 * m)
        a1, _, c1 = merge_intensities(asu.refl_anom[used][~h0], Iu[~h0], su[~h0], 2 * m)
        both = (c0[0::2] > 0) & (c0[1::2] > 0) & (c1[0::2] > 0) & (c1[1::2] > 0) & ~asu.centric
        dan0 = a0[0::2] - a0[1::2]
        dan1 = a1[0::2] - a1[1::2]

    # reference: merged mean over both Friedel mates per reflection
    if reference is not None:
        ref = reference_on_asu(asu.unique_hkl, reference, sg)
        imean, _, nmean = merge_intensities(asu.refl[used], Iu, su, m)
        ref_ok = np.isfinite(ref) & (nmean > 0)

    n_obs_shell = np.bincount(j_refl[asu.refl[counted]], minlength=ns)
    possible, possible_acentric = _possible_counts(cell, sg, edges, anomalous)

    cols = {c: (np.zeros(ns + 1, np.int64) if c in INT_COLUMNS else np.full(ns + 1, np.nan))
            for c in STAT_COLUMNS}
    cols["d_max"] = np.append(edges[:-1], edges[0])
    cols["d_min"] = np.append(edges[1:], edges[-1])
    n_obs_col = np.append(n_obs_shell, n_obs_shell.sum()).astype(np.int64)
    n_uni_col = np.zeros(ns + 1, np.int64)
    for row in range(ns + 1):
        sel_u = (j_unit >= 0) if row == ns else (j_unit == row)
        meas = sel_u & (nobs > 0)
        nu = int(meas.sum())
        n_uni_col[row] = nu
        if nu:
            cols["multiplicity"][row] = nobs[meas].sum() / nu
            cols["mean_i_over_sigma"][row] = ios[meas].mean()
        if possible[row] > 0:
            cols["completeness"][row] = nu / possible[row]
        pair = sel_u & (n0 > 0) & (n1 > 0)
        cols["cc_half"][row] = pearson(m0[pair], m1[pair])
        multi = sel_u & (cnt >= 2)
        den = sum_i[multi].sum()
        if multi.any() and den > 0:  # undefined (NaN) when the shell's Σ I is ≤ 0 (noise)
            cols["r_meas"][row] = (f_meas[multi] * absdev[multi]).sum() / den
            cols["r_pim"][row] = (f_pim[multi] * absdev[multi]).sum() / den
        sel_r = (j_refl >= 0) if row == ns else (j_refl == row)
        if anomalous:
            s = sel_r & both
            cols["cc_anom"][row] = pearson(dan0[s], dan1[s])
        if reference is not None:
            s = sel_r & ref_ok
            cols["cc_ref"][row] = pearson(imean[s], ref[s])
    if anomalous:
        _anomalous_rows(mean, sig, nobs, asu.centric, j_refl, possible_acentric, cols)
    cols["cc_star"] = cc_star(cols["cc_half"])
    cols["n_obs"] = n_obs_col
    cols["n_unique"] = n_uni_col

    # Wilson B from the non-anomalous merged means
    wi, _, wn = merge_intensities(asu.refl[used], Iu, su, m)
    inr = (wn > 0) & (j_refl >= 0)
    if inr.any():
        eps = np.asarray(sg.operations().epsilon_factor_without_centering_array(
            asu.unique_hkl[inr]), np.float64)
        wb = _wilson_b(d_refl[inr], wi[inr], eps, float(edges[-1]), float(edges[0]))
    else:  # pragma: no cover - valid.any() guarantees data
        wb = float("nan")

    # suggested high-resolution limit from the CC½ fit (reflection units of the table)
    pair_all = (j_unit >= 0) & (n0 > 0) & (n1 > 0)
    d_unit = np.repeat(d_refl, 2) if anomalous else d_refl
    s_fit, cc_fit = _cc_half_bins(m0, m1, pair_all, d_unit)
    d_sugg = fit_cc_half_resolution(s_fit, cc_fit) if s_fit.size else float("nan")

    return MergingStatistics(**cols, wilson_b_A2=wb, suggested_d_min_A=d_sugg,
                             anomalous=bool(anomalous),
                             has_reference=reference is not None,
                             n_rejected_images=n_rej_images)
