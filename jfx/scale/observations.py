"""Scaling observations: the integrated reflection table as fixed-shape float64 arrays.

One row per observation (an integrated reflection on an image, or a 3D-summed rotation
reflection). Intensities are Lorentz–polarisation corrected (I/lp, σ/lp), so the scaling
model is I_obs = g_i · P · I_hkl with g the per-image scale and P the partiality.
Rows that fail the filters keep their place with ``valid = False``; the arrays are padded
to a power-of-two bucket so that jitted scaling kernels compile once per bucket.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass, static
from jfx.models.reflections import ReflectionFlag
from jfx.physics.rotation import LabFrame  # noqa: F401  (re-exported: RunData.lab_frame)

INTENSITY_CHOICES = ("prf", "sum")


@pytree_dataclass
class Observations:
    """Observations for scaling, all arrays (n,) with n the padded row count.

    Attributes:
        refl: int32 index of the unique (ASU) reflection, 0..n_refl−1 (0 on invalid rows).
        image: int32 compact image index, 0..n_img−1 (rotation: the centroid image).
        intensity: float64 corrected intensity I/lp (photons / lp).
        sigma: float64 corrected σ/lp (> 0; 1 on invalid rows).
        s2: float64 s² = 1/(4d²) (Å⁻²), the argument of the B-factor term exp(−2B s²).
        d_A: float64 resolution (Å).
        partiality_stored: float64 partiality computed at integration time (``-P fixed``).
        is_still: bool, the row is a still observation (Ewald-offset partiality).
        phi_c_rad: float64 rotation angle of the reflection centre (rad; 0 for stills).
        zeta: float64 Kabsch ζ (rotation; 1 for stills).
        phi_lo_rad: float64 start angle of the first summed frame (rad; 0 for stills).
        phi_hi_rad: float64 end angle of the last summed frame with the nominal increment.
        frames: float64 number of summed frames (image_last − image_first + 1).
        eps_invA: float64 excitation error ε (Å⁻¹; 0 for rotation rows).
        eps_grad_a, eps_grad_b: float64 ∂ε/∂δ (Å⁻¹ per rad) for small crystal rotations δ
            about two axes perpendicular to the beam (stills post-refinement): a rotation δ
            moves q by δ×q, so ε changes by δ·(q×ŝ1) ≈ δ·(ŝ1×s0) = k sin 2θ (δ_a u + δ_b v),
            (u, v) the unit direction of the spot from the beam centre on the detector
            (0 for rotation rows and when the beam centre is not known).
        two_theta_rad: float64 scattering angle 2θ from d and λ (rad).
        valid: bool, the row takes part in scaling.
        var_signal: float64 σ² − var_bg in corrected units ((photons/lp)²): var_bg is the
            expected intensity-independent variance of the row (the variance the integrator
            reports for a zero intensity, :func:`background_variance`, smoothed over the
            rows of its image and resolution bin, :func:`smooth_background_variance`).
        poisson: float64 ∂σ²/∂I of the counting statistics in corrected units (1/lp for
            photon-counting data, whose summation variance is var_bg + I_raw). With these the
            variance at a *model* intensity m is σ² − var_signal + poisson·m
            (:func:`jfx.scale.error_model.model_variance`); rows built without the
            integrator's variance split have var_signal = 0, poisson = 0 (σ as given).
        run: int32 index of the run (input file) the row comes from (0 for one run).
        s0c_x, s0c_y, s0c_z: float64 unit vector of the REVERSED incident beam −ŝ0 in the
            crystal (goniometer) frame at the row's φ, −R(φ)ᵀŝ0 (rotation rows of a run
            with a known lab frame, :class:`LabFrame`; 0 otherwise).
        s1c_x, s1c_y, s1c_z: float64 unit vector of the diffracted beam in the crystal
            frame, R(φ)ᵀŝ1 (0 where unknown). With ``s0c`` the arguments of the absorption
            surface of :class:`jfx.scale.models.PhysicalScale`.
        frame_img: int32 (n, FRAME_SLOTS) compact image index of each frame a rotation row
            was summed over (its photons were recorded there); frame_w: float64
            (n, FRAME_SLOTS) the fraction of the row's recorded photons on that frame (the
            Gaussian rocking curve, :func:`frame_weights`; Σ = 1). Single-frame rows (stills):
            ``frame_img[:, 0] = image``, ``frame_w = (1, 0, …)``. A per-image scale model
            gives the row Σ_k w_k G(frame_k) + ``frame_other``.
        frame_other: float64 the part of that sum from frames outside the fitted image (0;
            set by the per-image fit, which holds the neighbouring images' scales fixed).
        partial_err: float64 relative standard error of the row's partiality correction,
            κ·(1 − p)/p for a rotation row recorded to the fraction p (the unrecorded tail is
            known to ±κ of itself, ``scale.partiality_uncertainty``); 0 for stills and full
            rows. Enters the variance at the model intensity m as (partial_err·m)².
        n_refl: static number of unique reflections.
        n_img: static number of (compact) images.
        wavelength_A: static wavelength (Å).
        phi_increment_rad: static nominal rotation increment per image (rad; 0 for stills).
    """

    refl: jnp.ndarray
    image: jnp.ndarray
    intensity: jnp.ndarray
    sigma: jnp.ndarray
    s2: jnp.ndarray
    d_A: jnp.ndarray
    partiality_stored: jnp.ndarray
    is_still: jnp.ndarray
    phi_c_rad: jnp.ndarray
    zeta: jnp.ndarray
    phi_lo_rad: jnp.ndarray
    phi_hi_rad: jnp.ndarray
    frames: jnp.ndarray
    eps_invA: jnp.ndarray
    eps_grad_a: jnp.ndarray
    eps_grad_b: jnp.ndarray
    two_theta_rad: jnp.ndarray
    valid: jnp.ndarray
    var_signal: jnp.ndarray
    poisson: jnp.ndarray
    run: jnp.ndarray
    s0c_x: jnp.ndarray
    s0c_y: jnp.ndarray
    s0c_z: jnp.ndarray
    s1c_x: jnp.ndarray
    s1c_y: jnp.ndarray
    s1c_z: jnp.ndarray
    frame_img: jnp.ndarray
    frame_w: jnp.ndarray
    frame_other: jnp.ndarray
    partial_err: jnp.ndarray
    n_refl: int = static(0)
    n_img: int = static(0)
    wavelength_A: float = static(1.0)
    phi_increment_rad: float = static(0.0)

    @property
    def size(self) -> int:
        """Padded row count n."""
        return int(self.refl.shape[0])

    @property
    def s0c(self) -> jnp.ndarray:
        """(n, 3) −ŝ0 in the crystal frame (zeros where unknown)."""
        return jnp.stack([self.s0c_x, self.s0c_y, self.s0c_z], axis=-1)

    @property
    def s1c(self) -> jnp.ndarray:
        """(n, 3) ŝ1 in the crystal frame (zeros where unknown)."""
        return jnp.stack([self.s1c_x, self.s1c_y, self.s1c_z], axis=-1)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x)


def rocking_sigma(phi_c, zeta, phi_lo, phi_hi, recorded) -> float | None:
    """σ_M (rad) of the Gaussian rocking curve (Kabsch 2010: width σ_M/|ζ| in φ) that gives
    rotation rows their recorded fraction ``recorded`` = Φ(b/σ) − Φ(a/σ),
    a = |ζ|(φ_lo − φc), b = |ζ|(φ_hi − φc): solved per row by bisection in ln σ (the fraction
    falls with σ when φ_lo < φc < φ_hi) over the rows with 0.05 < fraction < 0.995; the
    median. None when no row qualifies (every reflection recorded whole: the frames are far
    wider than the rocking curve).

    Args: (n,) arrays: φc, ζ, summed range [φ_lo, φ_hi] (rad), recorded fraction.
    """
    pc, z, lo, hi, f = (np.asarray(v, np.float64).reshape(-1)
                        for v in (phi_c, zeta, phi_lo, phi_hi, recorded))
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    a, b = np.abs(z) * (lo - pc), np.abs(z) * (hi - pc)
    use = (np.isfinite(a) & np.isfinite(b) & np.isfinite(f) & (a < 0) & (b > 0)
           & (f > 0.05) & (f < 0.995))
    if not use.any():
        return None
    a, b, f = a[use], b[use], f[use]
    x_lo, x_hi = np.full(a.shape, np.log(1e-7)), np.zeros(a.shape)  # σ ∈ [1e-7, 1] rad
    for _ in range(50):
        mid = 0.5 * (x_lo + x_hi)
        sg = np.exp(mid)
        p = _norm_cdf(b / sg) - _norm_cdf(a / sg)
        big = p > f  # σ too small: the fraction is still too large
        x_lo = np.where(big, mid, x_lo)
        x_hi = np.where(big, x_hi, mid)
    return float(np.median(np.exp(0.5 * (x_lo + x_hi))))


def frame_weights(phi_c, zeta, first, last, phi_start: float, phi_inc: float,
                  sigma: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The frames a rotation row was summed over and each one's share of its recorded
    photons: the Gaussian rocking curve of width σ/|ζ| in φ (Kabsch 2010) integrated over
    each frame [start + k·inc, start + (k+1)·inc], normalised over the summed frames; the
    :data:`FRAME_SLOTS` largest shares are kept (renormalised).

    Args:
        phi_c, zeta: (n,) reflection centre (rad) and Kabsch ζ.
        first, last: (n,) first / last summed image number.
        phi_start, phi_inc: scan (rad).
        sigma: rocking-curve σ_M (rad), or None: all weight on the frame of φc.
    Returns:
        (frames (n, FRAME_SLOTS) int64 image numbers, weights (n, FRAME_SLOTS) float64);
        unused slots have weight 0.
    """
    pc, z = (np.asarray(v, np.float64).reshape(-1) for v in (phi_c, zeta))
    f0 = np.asarray(first, np.float64).reshape(-1)
    f1 = np.maximum(np.asarray(last, np.float64).reshape(-1), f0)
    n = pc.size
    ok = np.isfinite(pc) & np.isfinite(z) & np.isfinite(f0) & np.isfinite(f1)
    f0, f1 = np.where(ok, f0, 0.0), np.where(ok, f1, 0.0)
    frames = np.zeros((n, FRAME_SLOTS), np.int64)
    w = np.zeros((n, FRAME_SLOTS), np.float64)
    centre = np.floor((np.where(ok, pc, 0.0) - phi_start) / phi_inc) if phi_inc else f0
    centre = np.clip(centre, f0, f1)
    if sigma is None or not phi_inc or n == 0:
        frames[:, 0], w[:, 0] = centre.astype(np.int64), 1.0
        return frames, w
    span = int(np.max(f1 - f0)) + 1 if n else 1
    k = f0[:, None] + np.arange(span)[None, :]
    inside = k <= f1[:, None]
    lo = phi_start + k * phi_inc
    hi = lo + phi_inc
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    s = np.maximum(float(sigma) / np.maximum(np.abs(np.where(ok, z, 1.0)), 1e-6), 1e-9)
    share = (_norm_cdf((hi - pc[:, None]) / s[:, None])
             - _norm_cdf((lo - pc[:, None]) / s[:, None]))
    share = np.where(inside & ok[:, None], np.maximum(share, 0.0), 0.0)
    order = np.argsort(-share, axis=1, kind="stable")[:, :FRAME_SLOTS]
    top = np.take_along_axis(share, order, axis=1)
    tot = top.sum(axis=1, keepdims=True)
    single = tot[:, 0] <= 0
    frames[:, :order.shape[1]] = np.take_along_axis(k, order, axis=1).astype(np.int64)
    w[:, :order.shape[1]] = np.where(tot > 0, top / np.where(tot > 0, tot, 1.0), 0.0)
    frames[single, 0], w[single] = centre[single].astype(np.int64), 0.0
    w[single, 0] = 1.0
    return frames, w


def bucket_size(n: int, minimum: int = 64) -> int:
    """Smallest power of two ≥ max(n, minimum)."""
    n = max(int(n), int(minimum))
    return 1 << (n - 1).bit_length()


def _col(table: dict, name: str, n: int, fill: float = np.nan) -> np.ndarray:
    if name in table and table[name] is not None:
        a = np.asarray(table[name], dtype=np.float64).reshape(-1)
        if a.shape[0] != n:
            raise ValueError(f"reflection column {name!r} has {a.shape[0]} rows, expected {n}")
        return a
    return np.full(n, fill, np.float64)


def observations_from_table(table: dict, *, refl_id, image_ids=None, wavelength_A: float,
                            phi_start_deg: float = 0.0, phi_increment_deg: float = 0.0,
                            intensity: str = "prf", min_partiality: float = 0.02,
                            min_recorded_fraction: float = 0.0,
                            d_min_A: float | None = None, n_refl: int | None = None,
                            n_img: int | None = None, pad: bool = True,
                            beam_center_px: tuple[float, float] | None = None,
                            lab_frame: LabFrame | None = None, run: int = 0,
                            image_lookup: Any = None,
                            partiality_uncertainty: float = 0.0) -> Observations:
    """Build :class:`Observations` from a reflection table (dict of numpy columns).

    Args:
        table: ``/entry/reflections`` columns (FORMATS.md): ``image d partiality lp int_sum
            int_sum_var int_prf int_prf_var flags`` plus ``predicted_phi`` (deg), ``zeta``,
            ``ewald_offset`` (Å⁻¹), ``image_first``, ``image_last`` where available. A row is a
            rotation row when ``zeta`` (nonzero) and ``predicted_phi`` are finite; a row with a
            finite φ but NaN/0 ζ is invalid; all other rows are still rows (ε = 0 where
            ``ewald_offset`` is missing/NaN, i.e. P = 1 under ``-P rot``).
        refl_id: (n_rows,) int unique-reflection index per row (the caller maps to the ASU);
            negative = not usable.
        image_ids: (n_rows,) compact image index per row; ``None`` = rank of ``table["image"]``
            among the sorted unique image numbers.
        wavelength_A: λ (Å), used for 2θ of still rows.
        phi_start_deg, phi_increment_deg: scan start and increment (deg): image k spans
            [start + k·inc, start + (k+1)·inc] (images numbered from 0).
        intensity: ``prf`` (int_prf where finite with positive finite variance, else int_sum)
            or ``sum``.
        min_partiality: rows whose stored partiality is below this are invalid.
        min_recorded_fraction: rotation rows whose stored partiality (the recorded fraction
            of the reflection summed over its images) is below this are invalid.
        d_min_A: rows with d < d_min_A are invalid (``None`` = no limit).
        n_refl, n_img: override the counts (default: max index + 1).
        pad: pad to a power-of-two bucket.
        beam_center_px: (x, y) beam centre; with ``predicted_x``/``predicted_y`` it gives the
            still rows' ``eps_grad_a``/``eps_grad_b`` (post-refinement of the orientation).
        lab_frame: the run's :class:`LabFrame`; with ``predicted_x``/``predicted_y`` it gives
            the rotation rows' crystal-frame beam directions ``s0c_*``/``s1c_*``.
        run: the run index of every row (``Observations.run``).
        image_lookup: maps image numbers (array) to compact image indices (−1: none); with
            it, rotation rows get the frames they were summed over and each frame's share
            (``frame_img``/``frame_w``, :func:`frame_weights` with the σ_M of
            :func:`rocking_sigma`); without it every row has its centroid image only.
        partiality_uncertainty: κ of ``partial_err`` (0 = the partiality correction of
            rotation rows is taken as exact).
    Raises:
        ValueError: inconsistent lengths or an unknown ``intensity`` choice.
    """
    if intensity not in INTENSITY_CHOICES:
        raise ValueError(f"unknown intensity choice {intensity!r} (known: prf, sum)")
    if wavelength_A is None or not np.isfinite(wavelength_A) or wavelength_A <= 0:
        raise ValueError("wavelength must be a positive number")
    img_num = np.asarray(table["image"]).reshape(-1)
    n = img_num.shape[0]
    refl_id = np.asarray(refl_id, np.int64).reshape(-1)
    if refl_id.shape[0] != n:
        raise ValueError(f"refl_id has {refl_id.shape[0]} rows, expected {n}")
    if image_ids is None:
        _, image_ids = np.unique(img_num, return_inverse=True)
    image_ids = np.asarray(image_ids, np.int64).reshape(-1)
    if image_ids.shape[0] != n:
        raise ValueError(f"image_ids has {image_ids.shape[0]} rows, expected {n}")

    d = _col(table, "d", n)
    lp = _col(table, "lp", n, 1.0)
    part = _col(table, "partiality", n, 1.0)
    isum, vsum = _col(table, "int_sum", n), _col(table, "int_sum_var", n)
    iprf, vprf = _col(table, "int_prf", n), _col(table, "int_prf_var", n)
    flags = (np.asarray(table["flags"]).astype(np.int64).reshape(-1) if "flags" in table
             else np.full(n, int(ReflectionFlag.INTEGRATED_SUM), np.int64))
    if intensity == "prf":
        use_prf = np.isfinite(iprf) & np.isfinite(vprf) & (vprf > 0)
        if "flags" in table:
            use_prf &= (flags & int(ReflectionFlag.INTEGRATED_PRF)) != 0
        I = np.where(use_prf, iprf, isum)
        V = np.where(use_prf, vprf, vsum)
        ok_int = use_prf | ((flags & int(ReflectionFlag.INTEGRATED_SUM)) != 0)
    else:
        use_prf = np.zeros(n, bool)
        I, V = isum, vsum
        ok_int = (flags & int(ReflectionFlag.INTEGRATED_SUM)) != 0
    V_bg = background_variance(I, V, use_prf, _col(table, "int_prf_var_bg", n))
    zeta = _col(table, "zeta", n)
    eps = _col(table, "ewald_offset", n)
    phi_c = np.radians(_col(table, "predicted_phi", n))
    first = _col(table, "image_first", n)
    last = _col(table, "image_last", n)
    first = np.where(np.isfinite(first), first, img_num.astype(np.float64))
    last = np.where(np.isfinite(last), last, first)
    zeta_ok = np.isfinite(zeta) & (zeta != 0)
    is_rot = zeta_ok & np.isfinite(phi_c)
    # rotation geometry announced (zeta column, finite φ) but unusable ζ: drop the row
    bad_rot = ("zeta" in table) & np.isfinite(phi_c) & ~zeta_ok
    is_still = ~is_rot
    eps = np.where(np.isfinite(eps), eps, 0.0)

    valid = (refl_id >= 0) & (image_ids >= 0) & ok_int
    valid &= np.isfinite(I) & np.isfinite(V) & (V > 0) & np.isfinite(lp) & (lp > 0)
    valid &= np.isfinite(d) & (d > 0) & ~bad_rot
    valid &= np.isfinite(part) & (part >= min_partiality)
    valid &= ~is_rot | (part >= min_recorded_fraction)
    if "flags" in table:
        valid &= (flags & int(ReflectionFlag.OUTLIER)) == 0
    if d_min_A is not None:
        valid &= d >= d_min_A

    inc = np.radians(float(phi_increment_deg))
    start = np.radians(float(phi_start_deg))
    lam = float(wavelength_A)
    safe_d = np.where(valid, d, 1.0)
    sin_t = np.clip(lam / (2.0 * safe_d), 0.0, 1.0)
    frames = np.where(is_rot, last - first + 1.0, 1.0)
    # variances at the model intensity only for tables whose variances follow the counting
    # relation of the integrator (var ≥ I); otherwise σ is used as given
    n_valid = max(int(valid.sum()), 1)
    counting = np.sum(valid & ~np.isfinite(V_bg)) <= MAX_NONCOUNTING_FRACTION * n_valid
    if counting:
        V_bg = smooth_background_variance(V_bg, image_ids, d, frames, valid)
        V_bg = np.where(np.isfinite(V_bg), V_bg, V)
    else:
        V_bg = V
    phi_lo = np.where(is_rot, start + first * inc, 0.0)
    cols = {
        "refl": np.where(valid, refl_id, 0).astype(np.int32),
        "image": np.where(valid, image_ids, 0).astype(np.int32),
        "intensity": np.where(valid, I / np.where(valid, lp, 1.0), 0.0),
        "sigma": np.where(valid, np.sqrt(np.where(valid, V, 1.0)) / np.where(valid, lp, 1.0), 1.0),
        "s2": 0.25 / safe_d**2, "d_A": safe_d,
        "partiality_stored": np.where(valid, part, 1.0),
        "is_still": is_still & valid,
        "phi_c_rad": np.where(is_rot & valid, phi_c, 0.0),
        "zeta": np.where(is_rot & valid, zeta, 1.0),
        "phi_lo_rad": np.where(valid, phi_lo, 0.0),
        "phi_hi_rad": np.where(valid, phi_lo + frames * inc, 0.0),
        "frames": np.where(valid, frames, 1.0),
        "eps_invA": np.where(is_still & valid, eps, 0.0),
        "eps_grad_a": np.zeros(n), "eps_grad_b": np.zeros(n),
        "two_theta_rad": 2.0 * np.arcsin(sin_t),
        "valid": valid,
        "var_signal": np.where(valid, (V - V_bg) / np.where(valid, lp, 1.0) ** 2, 0.0),
        "poisson": np.where(valid & counting, 1.0 / np.where(valid, lp, 1.0), 0.0),
    }
    if beam_center_px is not None and "predicted_x" in table and "predicted_y" in table:
        dx = _col(table, "predicted_x", n) - float(beam_center_px[0])
        dy = _col(table, "predicted_y", n) - float(beam_center_px[1])
        r = np.hypot(dx, dy)
        okr = is_still & valid & np.isfinite(r) & (r > 0)
        k_sin2t = np.sin(cols["two_theta_rad"]) / lam
        rr = np.where(okr, r, 1.0)
        cols["eps_grad_a"] = np.where(okr, k_sin2t * dx / rr, 0.0)
        cols["eps_grad_b"] = np.where(okr, k_sin2t * dy / rr, 0.0)
    cols["run"] = np.full(n, int(run), np.int32)
    safe_p = np.where(is_rot & valid & (part > 0), part, 1.0)
    cols["partial_err"] = np.where(is_rot & valid, float(partiality_uncertainty)
                                   * np.clip(1.0 - safe_p, 0.0, None) / safe_p, 0.0)
    fi = np.zeros((n, FRAME_SLOTS), np.int64)
    fw = np.zeros((n, FRAME_SLOTS), np.float64)
    fi[:, 0], fw[:, 0] = cols["image"], 1.0
    rot = is_rot & valid
    if image_lookup is not None and inc and rot.any():
        sig = rocking_sigma(phi_c[rot], zeta[rot], phi_lo[rot], cols["phi_hi_rad"][rot],
                            part[rot])
        frames, w = frame_weights(phi_c[rot], zeta[rot], first[rot], last[rot], start, inc,
                                  sig)
        ids = np.asarray(image_lookup(frames.reshape(-1)), np.int64).reshape(frames.shape)
        w = np.where(ids >= 0, w, 0.0)
        tot = w.sum(axis=1, keepdims=True)
        lone = tot[:, 0] <= 0
        w = np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 0.0)
        ids = np.where(ids >= 0, ids, cols["image"][rot][:, None])
        w[lone, 0] = 1.0
        ids[lone, 0] = cols["image"][rot][lone]
        fi[rot], fw[rot] = ids, w
    cols["frame_img"], cols["frame_w"] = fi, fw
    if lab_frame is not None and "predicted_x" in table and "predicted_y" in table:
        use = is_rot & valid
        s0c, s1c = lab_frame.crystal_directions(
            np.where(use, _col(table, "predicted_x", n), np.nan),
            _col(table, "predicted_y", n), phi_c)
        for i, c in enumerate("xyz"):
            cols[f"s0c_{c}"], cols[f"s1c_{c}"] = s0c[:, i], s1c[:, i]
    nr = int(n_refl) if n_refl is not None else int(refl_id[valid].max() + 1 if valid.any() else 1)
    ni = int(n_img) if n_img is not None else int(image_ids.max() + 1 if n else 1)
    if valid.any() and (refl_id[valid].max() >= nr or image_ids[valid].max() >= ni):
        raise ValueError("refl_id/image_ids exceed n_refl/n_img")
    return make_observations(cols, n_refl=nr, n_img=ni, wavelength_A=lam,
                             phi_increment_rad=inc, pad=pad)


VAR_BG_FLOOR = 1e-3
"""The intensity-independent variance is kept ≥ this fraction of the reported variance."""


def background_variance(I: np.ndarray, V: np.ndarray, is_prf: np.ndarray,
                        prf_var_bg: np.ndarray) -> np.ndarray:
    """The part of each reported variance that does not depend on the intensity (raw photons²).

    Summation (:mod:`jfx.integrate.summation`): var = max(Σ_disc v, 0) + n_s²·b/n_b with
    Σ_disc v = I + n_s·b, so var − I is the background part exactly (also for rotation
    reflections summed over partials). Profile fitting (:mod:`jfx.integrate.profile`): the
    variance the fit gives at I = 0, ``int_prf_var_bg`` (older files without it: var − max(I, 0),
    exact for I ≤ 0). A row whose result falls below :data:`VAR_BG_FLOOR` · var does not
    follow the counting relation (I > var: not from the integrator) and gets NaN.

    Args:
        I, V: (n,) intensity and variance (raw photons, photons²) of each row.
        is_prf: (n,) bool rows whose I, V are the profile-fitted ones.
        prf_var_bg: (n,) ``int_prf_var_bg`` (NaN where unknown).
    """
    with np.errstate(invalid="ignore"):
        v_prf = np.where(np.isfinite(prf_var_bg), prf_var_bg, V - np.maximum(I, 0.0))
        v = np.where(is_prf, v_prf, V - I)
        return np.where(np.isfinite(v) & (v >= VAR_BG_FLOOR * V), v, np.nan)


MAX_NONCOUNTING_FRACTION = 0.01
"""A run whose rows break var ≥ I (beyond this fraction) keeps its σ as given (no model
variance): its variances do not come from counting statistics."""

SMOOTH_BINS = 20
"""Resolution bins (equal counts in 1/d²) of :func:`smooth_background_variance`."""


def smooth_background_variance(v_bg: np.ndarray, image: np.ndarray, d: np.ndarray,
                               frames: np.ndarray, valid: np.ndarray,
                               n_bins: int = SMOOTH_BINS, n_iter: int = 4) -> np.ndarray:
    """The expected background variance of every row: v̂_i = F_img(i) · G_bin(i) · frames_i.

    Each row's own background variance comes from its own background estimate b̂ (about a
    hundred annulus pixels: at 0.1 photon/pixel ±30 %), which is anticorrelated with its
    intensity I = Σ_disc v − n_s·b̂; weights 1/σ² from it favour rows whose b̂ came out low,
    i.e. whose I came out high (merged ⟨I/σ⟩ +0.1 … +0.2 in shells without signal). The
    model replaces it by a per-image factor F times a per-resolution-bin factor G (equal-count
    bins in 1/d²) times the number of summed frames, fitted to the rows by alternating
    ratio-of-sums (a row moves its own F and G by 1/(rows in the image / bin)).

    Args:
        v_bg: (n,) intensity-independent variance of each row (raw photons²).
        image: (n,) int image index; d: (n,) resolution (Å); frames: (n,) summed frames;
        valid: (n,) bool rows that take part (the others keep ``v_bg``; valid rows with a
            NaN ``v_bg`` get the model of their image and bin, NaN when unknown).
    Returns:
        (n,) float64.
    """
    v_bg = np.asarray(v_bg, np.float64)
    okd = np.asarray(valid, bool) & np.isfinite(d) & (d > 0)
    ok = okd & np.isfinite(v_bg) & (v_bg > 0)
    if ok.sum() < 2 * n_bins:
        return v_bg
    img = np.unique(np.asarray(image)[ok], return_inverse=True)[1].reshape(-1)
    s = 1.0 / np.asarray(d, np.float64)[ok] ** 2
    edges = np.quantile(s, np.linspace(0.0, 1.0, n_bins + 1))
    k = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n_bins - 1)
    f = np.asarray(frames, np.float64)[ok]
    v = v_bg[ok]
    F = np.ones(img.max() + 1)
    G = np.ones(n_bins)
    for _ in range(n_iter):
        G = np.bincount(k, v, minlength=n_bins) / np.maximum(
            np.bincount(k, F[img] * f, minlength=n_bins), 1e-300)
        F = np.bincount(img, v) / np.maximum(np.bincount(img, G[k] * f), 1e-300)
    out = v_bg.copy()
    out[ok] = F[img] * G[k] * f
    # rows without a usable own value: the model of their image and bin where both are known
    rest = np.flatnonzero(okd & ~ok)
    if rest.size:
        imgs = np.unique(np.asarray(image)[ok])
        pos = np.searchsorted(imgs, np.asarray(image)[rest])
        known = (pos < imgs.size) & (imgs[np.minimum(pos, imgs.size - 1)]
                                     == np.asarray(image)[rest])
        sr = 1.0 / np.asarray(d, np.float64)[rest] ** 2
        kr = np.clip(np.searchsorted(edges, sr, side="right") - 1, 0, n_bins - 1)
        val = F[np.minimum(pos, imgs.size - 1)] * G[kr] * np.asarray(frames, np.float64)[rest]
        out[rest] = np.where(known, val, np.nan)
    return out


_DEFAULTS = {"refl": 0, "image": 0, "intensity": 0.0, "sigma": 1.0, "s2": 0.0, "d_A": 1.0,
                 "partiality_stored": 1.0, "is_still": False, "phi_c_rad": 0.0, "zeta": 1.0,
                 "phi_lo_rad": 0.0, "phi_hi_rad": 0.0, "frames": 1.0, "eps_invA": 0.0,
                 "eps_grad_a": 0.0, "eps_grad_b": 0.0, "two_theta_rad": 0.0, "valid": False,
                 "var_signal": 0.0, "poisson": 0.0, "run": 0, "s0c_x": 0.0, "s0c_y": 0.0,
                 "s0c_z": 0.0, "s1c_x": 0.0, "s1c_y": 0.0, "s1c_z": 0.0, "frame_other": 0.0,
                 "partial_err": 0.0}

FRAME_SLOTS = 4
"""Frames per rotation row whose scales enter its model (the largest rocking-curve fractions;
the rest is added to the nearest kept frame)."""


def make_observations(cols: dict, *, n_refl: int, n_img: int, wavelength_A: float = 1.0,
                      phi_increment_rad: float = 0.0, pad: bool = True) -> Observations:
    """Assemble :class:`Observations` from numpy columns (names as the dataclass fields).

    Missing columns take neutral defaults (``valid`` defaults to True for given rows;
    ``var_signal`` = ``poisson`` = 0: σ does not change with the model intensity);
    with ``pad`` the rows are padded to :func:`bucket_size` with invalid rows.
    Used by :func:`observations_from_table` and by simulations/tests.
    """
    n = int(np.asarray(cols["refl"]).shape[0])
    m = bucket_size(n) if pad else n
    out = {}
    for name, default in _DEFAULTS.items():
        if name == "valid" and name not in cols:
            a = np.ones(n, bool)
        elif name in cols:
            a = np.asarray(cols[name]).reshape(-1)
        else:
            a = np.full(n, default)
        if name in ("refl", "image", "run"):
            dt = np.int32
        elif name in ("is_still", "valid"):
            dt = bool
        else:
            dt = np.float64
        full = np.full(m, default, dt)
        full[:n] = a.astype(dt)
        out[name] = jnp.asarray(full)
    img = np.asarray(out["image"])
    fi = np.zeros((m, FRAME_SLOTS), np.int32)
    fw = np.zeros((m, FRAME_SLOTS), np.float64)
    fi[:, 0], fw[:, 0] = img, 1.0
    if "frame_img" in cols and "frame_w" in cols:
        fi[:n] = np.asarray(cols["frame_img"], np.int32).reshape(n, FRAME_SLOTS)
        fw[:n] = np.asarray(cols["frame_w"], np.float64).reshape(n, FRAME_SLOTS)
    out["frame_img"], out["frame_w"] = jnp.asarray(fi), jnp.asarray(fw)
    if "two_theta_rad" not in cols:
        sin_t = np.clip(wavelength_A / (2.0 * np.asarray(out["d_A"])), 0.0, 1.0)
        out["two_theta_rad"] = jnp.asarray(2.0 * np.arcsin(sin_t))
    if "s2" not in cols:
        out["s2"] = jnp.asarray(0.25 / np.asarray(out["d_A"]) ** 2)
    return Observations(**out, n_refl=int(n_refl), n_img=int(n_img),
                        wavelength_A=float(wavelength_A),
                        phi_increment_rad=float(phi_increment_rad))


def reflection_columns(refl: Any) -> dict[str, np.ndarray]:
    """The column mapping :func:`observations_from_table` and
    :func:`jfx.scale.scaling.scale_merge` read (``h k l image d lp partiality int_sum
    int_sum_var int_prf int_prf_var flags predicted_x predicted_y predicted_phi zeta
    ewald_offset image_first image_last``) of a :class:`jfx.models.reflections.Reflections`
    table. Its ``lp`` is the whole factor of the recorded intensity, Lorentz × polarisation
    × sensor detection efficiency (``refl.lp · refl.qe``): the one place where the
    integration's physical corrections meet the intensities (I / lp, σ / lp)."""
    hkl = np.asarray(refl.hkl)
    return {"h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2], "image": refl.image,
            "image_first": refl.image_first, "image_last": refl.image_last,
            "d": refl.d_A, "lp": np.asarray(refl.lp, np.float32) * np.asarray(refl.qe, np.float32),
            "qe": refl.qe, "partiality": refl.partiality,
            "int_sum": refl.int_sum, "int_sum_var": refl.int_sum_var,
            "int_prf": refl.int_prf, "int_prf_var": refl.int_prf_var, "flags": refl.flags,
            "predicted_x": refl.predicted_x, "predicted_y": refl.predicted_y,
            "predicted_phi": refl.predicted_phi_deg, "zeta": refl.zeta,
            "ewald_offset": refl.ewald_offset_invA, "background_mean": refl.background_mean,
            "int_prf_var_bg": refl.int_prf_var_bg}
