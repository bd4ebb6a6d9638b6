"""The pixel forward model of a still, its per-still fit and the integration from it.

Pure core (JAX; no I/O). One still, ``R`` predicted reflections, each with a ``B × B`` pixel
box (B odd, box pixel (j, i) at detector pixel (y0 + j, x0 + i), first pixel centre = 0):

    μ_p = b_p + m_j · s_p(θ),   m_j = G e^{−B_f q²/2} · I_ref,j · pol_j · QE_j · P_j(θ)

* ``b_p``: the background (fixed; :class:`jfx.pixelrefine.components.Background`),
* ``G``, ``B_f``: the still's scale and B factor (e^{−2 B s²} with s = q/2 = 1/2d),
* ``I_ref``: the reference intensity (``-z``) of the reflection's ASU index,
* ``pol``: polarisation (:func:`jfx.physics.corrections.polarization_factor`),
* ``P``: the partiality of the configured model at the predicted Ewald offset
  (:class:`jfx.pixelrefine.components.PixelPartiality`),
* ``s_p``: the configured spot profile at the predicted position
  (:class:`jfx.pixelrefine.components.SpotProfile`),

with positions and Ewald offsets from the same physics as prediction and simulation
(:func:`jfx.physics.diffraction.predict_still` on the still's lattice, rotated by a
rotation vector and with its cell in the lattice's symmetry, :mod:`jfx.physics.lattice`).

Reference error. The reference differs from the crystal (another crystal, another
experiment; the acceptance test gives it 30 % log-normal error), so each spot's amplitude may
deviate: m_j (1 + a_j) with a Gaussian prior a_j ~ N(0, σ_ref,j²). For fixed θ the best a_j is
linear least squares (variable projection, Golub & Pereyra 1973), so the residual vector is

    r = [ √w_p (c_p − b_p − m_j (1 + a_j*) s_p) ;  a_j*/σ_ref ],
    a_j* = Σ_p w (c − b − m s) m s / (Σ_p w m² s² + 1/σ_ref²),

with fixed Gaussian pixel weights w_p = 1/max(b_p + max(c_p − b_p, 0), 1) (the Gaussian
approximation of the Poisson likelihood). Positions come from the profile's centre,
partiality and widths from the amplitudes against the reference — reflections predicted
bright but absent cost ≈ 1/(2σ_ref²) each, reflections present but predicted absent pull the
orientation toward exciting them. Levenberg–Marquardt (:func:`jfx.solvers.solve`) under
``vmap`` over the stills of a batch, float64.

Integration (:func:`integrate_rows`): every row's intensity is fitted from its own pixels
with the refined profile (Kabsch 1988 profile fitting, weights from b + max(I − 3σ₀, 0)·s
as :mod:`jfx.integrate.profile`) inside the aperture r ≤ ``profile_multiplier`` · σ_t of the
refined centre; the reference never enters the output intensity, only the geometry and the
partiality that come with it.

Following diffBragg (Mendez et al., IUCrJ 2020, 7, 1151) in modelling the pixels of every
shoebox with per-shot orientation, cell, mosaic and scale parameters; the forward model here
is analytic (no per-pixel Ewald-sphere integration), fast enough for a beamline.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass
from jfx.models.geometry import Geometry

STATUS = {0: "ok", 1: "not converged", 2: "failed", 3: "too few reflections"}
"""Per-still status codes of the pixel fit (kept in ``/entry/MX/pixelrefine/status``)."""
OK, NOT_CONVERGED, FAILED, TOO_FEW = 0, 1, 2, 3

LOG_PRIOR_SIGMA = 1.0
"""σ (in ln) of the priors on the parts' ``log_`` parameters around their starting values
(a factor e either way costs ½; the pixels of a still outweigh it wherever they constrain
the parameter)."""

ORIENTATION_SIGMA_RAD = float(np.radians(0.1))
"""σ (rad, per axis) of the prior on the orientation change from the spot-based refinement
(which fixes the orientation to a few hundredths of a degree): a still whose pixels hold
little signal cannot wander onto noise (a real weak frame turned 1.7° without it)."""

MAX_ROTATION_DEG = 0.5
"""A fit that turns the crystal further than this from the spot-refined orientation is
status ``failed`` (the spot model is kept)."""

B_FACTOR_PRIOR_A2 = 30.0
"""σ (Å²) of the zero-mean prior on the per-still B factor (G and B are nearly degenerate
over the narrow resolution range of weak stills)."""

WEIGHT_SHIFT_SIGMA = 3.0
"""Integration weights use I − this many σ₀ (unbiased weak reflections; as
:mod:`jfx.integrate.profile`)."""

V_FLOOR = 0.1
"""Floor of a pixel's model variance in the integration weights (photons)."""

V_FLOOR_FIT = 0.5
"""Floor of a pixel's model variance in the fit weights (photons)."""

WEIGHT_ROUNDS = 2
"""Full-fit rounds, each with the pixel weights from the previous round's model."""


@pytree_dataclass
class StillData:
    """Fit / integration inputs of one still (a batch: every leaf with a leading axis).

    Attributes:
        hkl: (R, 3) float64 Miller indices (crystal setting of the still's lattice).
        fit: (R,) bool rows that drive the fit (reference known, box usable).
        valid: (R,) bool real rows (False: padding).
        iref: (R,) float64 reference intensity (0 where unknown).
        ref_sigma: (R,) float64 relative uncertainty of ``iref`` (σ of the amplitude prior;
            ``pixelrefine.reference_sigma`` for an external reference, from the merged σ
            for the data's own merge).
        qe: (R,) float64 detection efficiency of the row's ray.
        counts: (R, B, B) float32 photons.
        weight: (R, B, B) float32 fit weight 1/var (0: masked, saturated, off the detector).
        background: (R, B, B) float32 background model (photons/pixel).
        bg_var: (R,) float64 variance of the background mean under the spot (photons²).
        x0, y0: (R,) float64 detector coordinates of box pixel (0, 0) (px).
        U0: (3, 3) float64 reference orientation (:func:`jfx.refine.params.from_basis`).
        geometry: the still's geometry (beam + detector).
    """

    hkl: Any
    fit: Any
    valid: Any
    iref: Any
    ref_sigma: Any
    qe: Any
    counts: Any
    weight: Any
    background: Any
    bg_var: Any
    x0: Any
    y0: Any
    U0: Any
    geometry: Geometry


def still_params(cell_u: np.ndarray, partiality: Any, profile: Any,
                 bandwidth_fwhm: float) -> dict:
    """Starting parameter pytree of one still: ``crystal`` (``rotvec`` (3,) rad, ``cell_u``
    internal cell of the lattice system), ``scale`` (``log_g``, ``b_factor`` Å²),
    ``partiality`` and ``profile`` (the parts' own scalars). float64 leaves."""
    f = functools.partial(np.asarray, dtype=np.float64)
    return {"crystal": {"rotvec": np.zeros(3), "cell_u": f(cell_u)},
            "scale": {"log_g": f(0.0), "b_factor": f(0.0)},
            "partiality": {k: f(v) for k, v in partiality.init_params(bandwidth_fwhm).items()},
            "profile": {k: f(v) for k, v in profile.init_params(bandwidth_fwhm).items()}}


def free_mask(params: dict, partiality: Any, profile: Any, *, geometry: bool = True,
              scale_b: bool = True) -> dict:
    """Free-leaf mask of :func:`still_params` (``geometry`` False: orientation, cell and
    partiality fixed — the first, scale-and-profile round)."""
    return {"crystal": {"rotvec": geometry, "cell_u": geometry},
            "scale": {"log_g": True, "b_factor": bool(scale_b and geometry)},
            "partiality": {k: bool(v and geometry)
                           for k, v in partiality.free().items() if k in params["partiality"]},
            "profile": dict(profile.free())}


def basis_of(params: dict, U0, system: str):
    """(3, 3) real-space basis (rows a, b, c, Å, lab frame) of the still's parameters."""
    from jfx.physics.lattice import cell_from_internal, cell_to_basis_jax, rotvec_to_matrix

    cr = params["crystal"]
    B = cell_to_basis_jax(cell_from_internal(cr["cell_u"], system))
    U = rotvec_to_matrix(cr["rotvec"]) @ U0
    return B @ U.T


def model(params: dict, d: StillData, partiality: Any, profile: Any, system: str) -> dict:
    """The forward model of one still (module docstring).

    Returns a dict of (R,) arrays ``x``, ``y`` (px), ``eps`` (Å⁻¹), ``sigma_eps`` (Å⁻¹),
    ``q`` (1/d, Å⁻¹), ``two_theta`` (rad), ``pol``, ``P`` (partiality), ``m`` (expected
    full-spot photons from the reference), ``g`` (scale G e^{−B q²/2}), and ``s``
    (R, B, B) profile fractions.
    """
    from jfx.physics import diffraction as dif
    from jfx.physics.corrections import polarization_factor

    geo = d.geometry
    basis = basis_of(params, d.U0, system)
    pr = dif.predict_still(geo, basis, d.hkl)
    fin = jnp.isfinite(pr["x"]) & jnp.isfinite(pr["y"])
    x = jnp.where(fin, pr["x"], 0.0)
    y = jnp.where(fin, pr["y"], 0.0)
    lam = geo.beam.wavelength_A
    q = 1.0 / pr["d"]
    tth = 2.0 * jnp.arcsin(jnp.clip(0.5 * q * lam, 0.0, 1.0))
    P = partiality(params["partiality"], pr["eps"], q, tth, lam)
    sig = partiality.sigma_eps(params["partiality"], q, tth, lam)
    pol = polarization_factor(geo.beam, pr["s1"])
    sc = params["scale"]
    g = jnp.exp(sc["log_g"] - 0.5 * sc["b_factor"] * q * q)
    m = g * d.iref * pol * d.qe * P
    B = d.counts.shape[-1]
    ar = jnp.arange(B, dtype=jnp.float64)
    dx = d.x0[:, None, None] + ar[None, None, :] - x[:, None, None]
    dy = d.y0[:, None, None] + ar[None, :, None] - y[:, None, None]
    bc = geo.detector.beam_center_px
    rx, ry = x - bc[0], y - bc[1]
    rn = jnp.sqrt(rx * rx + ry * ry)
    ok = rn > 1e-6
    rs = jnp.where(ok, rn, 1.0)
    radial = jnp.stack([jnp.where(ok, rx / rs, 1.0), jnp.where(ok, ry / rs, 0.0)], -1)
    s = profile(params["profile"], dx, dy, radial, tth)
    return {"x": x, "y": y, "eps": pr["eps"], "sigma_eps": sig, "q": q, "two_theta": tth,
            "pol": pol, "P": P, "m": m, "g": g, "s": s, "on": fin}


def _amplitude(m, s, w, y, ref_sigma):
    """Best relative amplitude change a* of each row (module docstring)."""
    ms = m[:, None, None] * s
    s1 = jnp.sum(w * (y - ms) * ms, axis=(1, 2))
    s2 = jnp.sum(w * ms * ms, axis=(1, 2))
    return s1 / (s2 + 1.0 / (ref_sigma * ref_sigma)), ms


def residuals(params: dict, d: StillData, partiality: Any, profile: Any, system: str,
              prior: dict | None = None, partiality_prior_sigma: float = 1.0,
              orientation_sigma_rad: float = ORIENTATION_SIGMA_RAD) -> jnp.ndarray:
    """Residual vector (R·B² + R + 1 + priors,) of one still (module docstring), float64;
    ``prior``: the starting parameters (centres of the width priors), or None;
    ``partiality_prior_sigma``: σ (ln) of the partiality parameters' prior (the
    population's spread when the centres are a pilot's medians)."""
    mo = model(params, d, partiality, profile, system)
    use = d.fit & d.valid & mo["on"]
    w = jnp.where(use[:, None, None], d.weight.astype(jnp.float64), 0.0)
    y = d.counts.astype(jnp.float64) - d.background.astype(jnp.float64)
    a, ms = _amplitude(mo["m"], mo["s"], w, y, d.ref_sigma)
    a = jnp.where(use, a, 0.0)
    r_pix = jnp.sqrt(w) * (y - (1.0 + a)[:, None, None] * ms)
    r_amp = a / d.ref_sigma
    r_b = params["scale"]["b_factor"][None] / B_FACTOR_PRIOR_A2
    r_rot = params["crystal"]["rotvec"] / orientation_sigma_rad
    return jnp.concatenate([r_pix.ravel(), r_amp, r_b, r_rot,
                            _width_prior(params, prior, partiality_prior_sigma)])


def _width_prior(params: dict, prior: dict | None, partiality_sigma: float) -> jnp.ndarray:
    """Weak priors (σ = :data:`LOG_PRIOR_SIGMA` in ln) keeping the parts' ``log_``
    parameters near their starting values where the pixels do not constrain them (a
    bandwidth the data cannot see would otherwise drift to 0 or to a saturated P ≈ 1)."""
    out = [jnp.zeros((0,), jnp.float64)]
    if prior is None:
        return out[0]
    for part, sig in (("partiality", partiality_sigma), ("profile", LOG_PRIOR_SIGMA)):
        for k, v in params[part].items():
            if k.startswith("log_") and k in prior[part]:
                out.append(jnp.reshape((v - prior[part][k]) / sig, (1,)))
    return jnp.concatenate(out)


def model_weights(params: dict, d: StillData, partiality: Any, profile: Any,
                  system: str) -> jnp.ndarray:
    """(R, B, B) pixel weights 1/max(b + μ_spot, :data:`V_FLOOR_FIT`) from the model's
    expected counts (with each row's best amplitude), 0 where the data's weight is 0.
    Weights from the data (1/c) bias weak spots low (Neyman's χ²) and with them the
    fitted rocking-curve width; these are the Poisson variances of the current model."""
    mo = model(params, d, partiality, profile, system)
    w0 = d.weight.astype(jnp.float64)
    y = d.counts.astype(jnp.float64) - d.background.astype(jnp.float64)
    a, ms = _amplitude(mo["m"], mo["s"], w0, y, d.ref_sigma)
    mu = d.background.astype(jnp.float64) + jnp.maximum((1.0 + a)[:, None, None] * ms, 0.0)
    return jnp.where(w0 > 0, 1.0 / jnp.maximum(mu, V_FLOOR_FIT), 0.0).astype(d.weight.dtype)


def _initial_scale(params: dict, d: StillData, partiality: Any, profile: Any,
                   system: str) -> dict:
    """``log_g`` set to the least-squares scale of the reference model to the pixels."""
    mo = model(params, d, partiality, profile, system)
    use = d.fit & d.valid & mo["on"]
    w = jnp.where(use[:, None, None], d.weight.astype(jnp.float64), 0.0)
    y = d.counts.astype(jnp.float64) - d.background.astype(jnp.float64)
    ms = (mo["m"] / mo["g"])[:, None, None] * mo["s"]
    num = jnp.sum(w * y * ms)
    den = jnp.sum(w * ms * ms)
    g = jnp.where((den > 0) & (num > 0), num / jnp.maximum(den, 1e-300), 1.0)
    sc = dict(params["scale"])
    sc["log_g"] = jnp.log(g)
    return {**params, "scale": sc}


@functools.partial(jax.jit, static_argnames=("partiality", "profile", "system",
                                             "max_iter", "solver", "partiality_prior_sigma"))
def fit_batch(params: dict, data: StillData, *, partiality: Any, profile: Any, system: str,
              max_iter: int = 30, solver: str = "lm",
              partiality_prior_sigma: float = LOG_PRIOR_SIGMA):
    """Fit a batch of stills (leading axis on every leaf of ``params`` and ``data``).

    Rounds per still: scale and profile with the geometry fixed, then every free
    parameter (:data:`WEIGHT_ROUNDS` times, pixel weights from the model). The partiality
    parameters have a prior of σ ``partiality_prior_sigma`` (ln) around their starting
    values (the stage starts them at a pilot's population medians). Returns (params, cost (n,), converged (n,), iterations (n,), sigma: the
    standard uncertainties of every leaf of ``params`` (0 for fixed ones; from the
    Gauss-Newton covariance s²(JᵀJ)⁻¹ at the solution, s² = 2·cost/(n_obs − n_par)),
    n_obs (n,) pixels + reflections that drove the fit).
    """
    from jfx.solvers import solve, split_free

    def one(p, d):
        prior = {"partiality": p["partiality"], "profile": p["profile"]}
        p = _initial_scale(p, d, partiality, profile, system)
        m1 = free_mask(p, partiality, profile, geometry=False)
        p, _ = solve(residuals, p, m1,
                     args=(d, partiality, profile, system, prior, partiality_prior_sigma),
                     solver=solver, max_iter=10, tol=1e-6)
        m2 = free_mask(p, partiality, profile, geometry=True)
        for it in range(WEIGHT_ROUNDS):  # iteratively reweighted: weights from the model
            d = dataclasses.replace(d, weight=model_weights(p, d, partiality, profile, system))
            args = (d, partiality, profile, system, prior, partiality_prior_sigma)
            p, info = solve(residuals, p, m2, args=args, solver=solver,
                            max_iter=max_iter if it == 0 else max(max_iter // 3, 1),
                            tol=1e-7)
        x, unflatten, _, _ = split_free(p, m2)
        J = jax.jacfwd(lambda z: residuals(unflatten(z), *args))(x)
        n_obs = jnp.sum(jnp.any(J != 0, axis=1))
        dof = jnp.maximum(n_obs - x.shape[0], 1)
        s2 = 2.0 * info.cost / dof
        A = J.T @ J  # column-scaled before the inversion: the leaves differ by decades
        dg = jnp.sqrt(jnp.diagonal(A))
        inv = jnp.where(dg > 0, 1.0 / jnp.where(dg > 0, dg, 1.0), 0.0)
        cov = jnp.linalg.pinv(A * inv[:, None] * inv[None, :]) * inv[:, None] * inv[None, :] \
            * s2
        sd = jnp.sqrt(jnp.maximum(jnp.diagonal(cov), 0.0))
        zero = jax.tree_util.tree_map(jnp.zeros_like, p)
        _, unflatten0, _, _ = split_free(zero, m2)
        sig = unflatten0(sd)
        return p, info.cost, info.converged, info.iterations, sig, n_obs

    return jax.vmap(one)(params, data)


@functools.partial(jax.jit, static_argnames=("partiality", "profile", "system"))
def integrate_rows(params: dict, data: StillData, aperture_multiplier: jnp.ndarray, *,
                   partiality: Any, profile: Any, system: str) -> dict:
    """Profile-fitted and summed intensities of every row of a batch of stills from the
    refined model (module docstring). Returns (n, R) arrays: ``x``, ``y``, ``eps``,
    ``sigma_eps``, ``P``, ``pol``, ``q``; ``int_prf``, ``var_prf``, ``var_prf_bg`` (the
    variance at I = 0); ``int_sum``, ``var_sum``; ``n_ap`` (usable aperture pixels),
    ``aperture_px`` (its radius), ``background`` (mean under the spot). Pixels with weight
    0 (masked, saturated, a neighbour's core) are left out."""

    def one(p, d):
        mo = model(p, d, partiality, profile, system)
        B = d.counts.shape[-1]
        ar = jnp.arange(B, dtype=jnp.float64)
        dx = d.x0[:, None, None] + ar[None, None, :] - mo["x"][:, None, None]
        dy = d.y0[:, None, None] + ar[None, :, None] - mo["y"][:, None, None]
        rad = jnp.minimum(aperture_multiplier * profile.tangential_sigma_px(p["profile"]),
                          0.5 * (B - 1))
        inside = (dx * dx + dy * dy) <= rad * rad
        usable = d.weight > 0
        ap = inside & usable
        c = d.counts.astype(jnp.float64)
        b = d.background.astype(jnp.float64)
        y = jnp.where(ap, c - b, 0.0)
        s = jnp.where(ap, mo["s"], 0.0)
        bmax = jnp.maximum(b, V_FLOOR)
        # σ₀: the fit's σ at I = 0; weights use max(I − 3σ₀, 0)
        den0 = jnp.sum(s * s / bmax, axis=(1, 2))
        sig0 = jnp.sqrt(1.0 / jnp.maximum(den0, 1e-300))
        I = jnp.sum(y, axis=(1, 2))
        for _ in range(3):
            V = jnp.maximum(b + jnp.maximum(I - WEIGHT_SHIFT_SIGMA * sig0, 0.0)[:, None, None]
                            * mo["s"], V_FLOOR)
            den = jnp.sum(s * s / V, axis=(1, 2))
            I = jnp.sum(s * y / V, axis=(1, 2)) / jnp.maximum(den, 1e-300)
        Vp = jnp.maximum(b + jnp.maximum(I, 0.0)[:, None, None] * mo["s"], V_FLOOR)
        a = jnp.where(ap, (s / V) / jnp.maximum(den, 1e-300)[:, None, None], 0.0)
        suma = jnp.sum(a, axis=(1, 2))
        var = jnp.sum(a * a * Vp, axis=(1, 2)) + suma * suma * d.bg_var
        var_bg = 1.0 / jnp.maximum(den0, 1e-300) + suma * suma * d.bg_var
        n_ap = jnp.sum(ap, axis=(1, 2))
        i_sum = jnp.sum(y, axis=(1, 2))
        var_sum = jnp.sum(jnp.where(ap, jnp.maximum(c, 1.0), 0.0), axis=(1, 2)) \
            + n_ap * n_ap * d.bg_var
        prof_in = jnp.sum(s, axis=(1, 2))
        good = d.valid & mo["on"] & (n_ap > 0) & (den > 0)
        nan = jnp.nan
        bmean = jnp.sum(jnp.where(ap, b, 0.0), axis=(1, 2)) / jnp.maximum(n_ap, 1)
        return {"x": mo["x"], "y": mo["y"], "eps": mo["eps"], "sigma_eps": mo["sigma_eps"],
                "P": mo["P"], "pol": mo["pol"], "q": mo["q"], "on": mo["on"],
                "int_prf": jnp.where(good, I, nan), "var_prf": jnp.where(good, var, nan),
                "var_prf_bg": jnp.where(good, var_bg, nan),
                "int_sum": jnp.where(good, i_sum, nan),
                "var_sum": jnp.where(good, var_sum, nan), "n_ap": n_ap,
                "aperture_px": jnp.broadcast_to(rad, n_ap.shape), "background": bmean,
                "profile_inside": prof_in}

    return jax.vmap(one)(params, data)


__all__ = ["FAILED", "NOT_CONVERGED", "OK", "STATUS", "StillData", "TOO_FEW", "basis_of",
           "fit_batch", "free_mask", "integrate_rows", "model", "residuals", "still_params"]
