"""Scaling fit: per-image scales (+ B), partiality parameters and merged intensities.

Model of an observation (corrected for Lorentz–polarisation):
``I_obs ≈ g(params_s) · P(params_p) · I_hkl`` with g from a :class:`~jfx.scale.base.ScaleModel`,
P from a :class:`~jfx.scale.base.PartialityModel` and the error law from a
:class:`~jfx.scale.base.Likelihood`.

Two solvers:

* ``lm`` (default) alternates, per iteration,
  (a) merge: I_hkl = Σ w·gP·I / Σ w·(gP)² with w = ω/σ² (ω: IRLS weight), the maximum-likelihood
      estimate for fixed scales (Hamilton, Rollett & Sparks 1965, Acta Cryst. 18, 129), or the
      reference intensities when given;
  (b) the image parameters (ln G, B, wedge …) by Levenberg–Marquardt
      (:func:`jfx.solvers.solve`) vmapped over images, observations grouped per image into
      a fixed (n_img, cap) layout (cap a power of two), float64;
  (c) the global parameters (mosaicity …) by LM over all observations with I_hkl eliminated
      analytically (variable projection: I_hkl is the weighted merge as a function of the
      parameters, Golub & Pereyra 1973, SIAM J. Numer. Anal. 10, 413);
  then the gauge is fixed (mean ln G = 0, mean B = 0 without a reference), the error model
  σ'² = a²(σ² + (b·gP·I_hkl)²) is refitted and robust IRLS weights are updated.
  σ² of every observation is evaluated at the model intensity gP·Ĩ_hkl, not at the
  observation's own (:mod:`jfx.scale.error_model`: var_bg + κ·gP·Ĩ_hkl with
  var_bg = σ² − var_signal and Ĩ the Wilson posterior mean of the merge), re-evaluated
  before every merge.
* ``lbfgs``: one joint L-BFGS (``optax.lbfgs``) of all free parameters on the likelihood's
  negative log-likelihood with I_hkl eliminated (or the reference), in variables scaled by
  the inverse Gauss–Newton column norms; error model and IRLS weights are refitted between
  ``iterations`` rounds as in ``lm``.

Arrays are passed to the jitted kernels as arguments (never closed over); kernels compile
once per (bucket size, n_img, cap, model) combination.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import replace
from jfx.scale.base import Likelihood, PartialityModel, ScaleModel
from jfx.scale.error_model import (
    ErrorModel,
    fit_error_model,
    model_variance,
    posterior_intensity,
    shell_prior_means,
)
from jfx.scale.likelihood import NormalLikelihood
from jfx.scale.observations import VAR_BG_FLOOR, Observations, bucket_size
from jfx.solvers import lbfgs_loop, solve, split_free

SOLVERS = ("lm", "lbfgs")


@dataclasses.dataclass(frozen=True)
class ScaleFit:
    """Result of :func:`fit_scales` (numpy arrays).

    Attributes:
        params: ``{"partiality": ..., "scale": ...}`` parameter pytrees (jax arrays).
        intensity: (n_refl,) merged I_hkl (NaN where no observation); the reference scale
            when a reference was given.
        sigma: (n_refl,) σ(I_hkl) (NaN where no observation).
        n_obs: (n_refl,) number of observations used.
        scale: (n_img,) per-image G (1 for images without observations).
        bfactor: (n_img,) per-image B (Å²) or zeros.
        wedge_deg: (n_img,) per-image wedge (deg) or None (model without a wedge).
        mosaicity_deg: refined σ_M (deg) or None.
        error_model: the final :class:`ErrorModel` (identity when not fitted).
        image_ok: (n_img,) bool, image had enough observations to be fitted.
        obs_scale: (n,) g per observation; obs_partiality: (n,) P per observation.
        obs_sigma: (n,) σ after the error model, at the model intensity (the merge weights);
        obs_sigma_reported: (n,) σ after the error model from the integrator's own σ (the
            outlier tests); obs_weight: (n,) final weight (0 = unused).
        history: per-iteration dicts ``{"iteration", "cost", "n_used", "error_model_a",
            "error_model_b"}`` (cost = the likelihood's nll after the iteration, n_used = rows
            with nonzero weight for the next iteration) plus the
            solver iteration counts ``image_lm_iterations`` (slowest lane),
            ``global_lm_iterations`` or ``lbfgs_iterations`` where they ran.
    """

    params: dict
    intensity: np.ndarray
    sigma: np.ndarray
    n_obs: np.ndarray
    scale: np.ndarray
    bfactor: np.ndarray
    wedge_deg: np.ndarray | None
    mosaicity_deg: float | None
    error_model: ErrorModel
    image_ok: np.ndarray
    obs_scale: np.ndarray
    obs_partiality: np.ndarray
    obs_sigma: np.ndarray
    obs_weight: np.ndarray
    history: list
    obs_sigma_reported: np.ndarray | None = None


# ----------------------------------------------------------------------------- helpers

def _gp(pmodel, smodel, params, obs):
    return smodel(params["scale"], obs) * pmodel(params["partiality"], obs)


def _prior(pmodel, smodel, params):
    """(m,) restraint residuals of both models on their global and image leaves
    (:meth:`~jfx.scale.base._Part.prior_residuals`, ``image_prior_residuals``; m = 0
    without restraints)."""
    parts = [f(params[k]) for m, k in ((pmodel, "partiality"), (smodel, "scale"))
             for f in (m.prior_residuals, m.image_prior_residuals)]
    parts = [jnp.ravel(r) for r in parts if r is not None]
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.float64)


def _merge_arrays(gp, obs, sigma, weights):
    """Weighted merge for fixed gP: (I_hkl, σ_hkl, Σw(gP)²) each (n_refl,)."""
    w = weights / (sigma * sigma)
    num = jax.ops.segment_sum(w * gp * obs.intensity, obs.refl, num_segments=obs.n_refl)
    den = jax.ops.segment_sum(w * gp * gp, obs.refl, num_segments=obs.n_refl)
    ok = den > 0
    I = jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)
    s = jnp.where(ok, 1.0 / jnp.sqrt(jnp.where(ok, den, 1.0)), 0.0)
    return I, s, den


def _refl_s2(obs: Observations) -> np.ndarray:
    """(n_refl,) mean s² of each reflection's valid observations (NaN: none)."""
    v = np.asarray(obs.valid)
    r = np.asarray(obs.refl)[v]
    cnt = np.bincount(r, minlength=obs.n_refl)
    tot = np.bincount(r, np.asarray(obs.s2)[v], minlength=obs.n_refl)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / cnt, np.nan)


def _model_sigma(obs: Observations, gp, I_hkl, s_hkl, s2_refl, em: ErrorModel):
    """σ' of every observation at the model intensity gP·Ĩ_hkl (Ĩ: Wilson posterior mean of
    the merged I_hkl, :func:`jfx.scale.error_model.posterior_intensity`), and σ before the
    error model (both (n,))."""
    I_np, s_np = np.asarray(I_hkl), np.asarray(s_hkl)
    has = s_np > 0
    prior = shell_prior_means(I_np, s2_refl, has)
    I_t = np.where(has, posterior_intensity(I_np, np.where(has, s_np, 1.0),
                                            np.nan_to_num(prior)), 0.0)
    return _sigma_at(obs, gp, jnp.asarray(I_t), em.a, em.b)


@jax.jit
def _sigma_at(obs: Observations, gp, I_t, a, b):
    """(σ', σ) at the model intensity gP·Ĩ (one compiled kernel: eager jnp ops on (n,)
    arrays each compile on first use)."""
    m = gp * I_t[obs.refl]
    s2 = obs.sigma**2
    var = model_variance(jnp.maximum(s2 - obs.var_signal, VAR_BG_FLOOR * s2), obs.poisson, m)
    var = var + (obs.partial_err * m) ** 2  # the partiality correction's own uncertainty
    return a * jnp.sqrt(var + (b * m) ** 2), jnp.sqrt(var)


@partial(jax.jit, static_argnums=(0, 1))
def _gauge(pmodel, smodel, params, image_ok):
    return {"partiality": pmodel.fix_gauge(params["partiality"], image_ok),
            "scale": smodel.fix_gauge(params["scale"], image_ok)}


def _masks(pmodel, smodel):
    return {"partiality": pmodel.free(), "scale": smodel.free()}


def _has_free(mask, part):
    return any(jax.tree_util.tree_leaves({k: v[part] for k, v in mask.items()}))


@partial(jax.jit, static_argnums=(0, 1))
def _merge(pmodel, smodel, params, obs, sigma, weights):
    gp = _gp(pmodel, smodel, params, obs)
    return (*_merge_arrays(gp, obs, sigma, weights), gp)


def _model_I(pmodel, smodel, params, obs, sigma, weights, ref_obs, use_ref: bool):
    gp = _gp(pmodel, smodel, params, obs)
    if use_ref:
        I_obs = ref_obs
    else:
        I_hkl, _, _ = _merge_arrays(gp, obs, sigma, weights)
        I_obs = I_hkl[obs.refl]
    return gp * I_obs


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _cost(pmodel, smodel, lik, use_ref, params, obs, sigma, weights, ref_obs):
    m = _model_I(pmodel, smodel, params, obs, sigma, weights, ref_obs, use_ref)
    r = _prior(pmodel, smodel, params)
    return lik.nll(m, obs.intensity, sigma, weights) + 0.5 * jnp.sum(r * r)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _image_step(pmodel, smodel, lik, max_iter, tol, params, obs, idx, lmask, I_obs, sigma,
                weights):
    """Per-image LM of the image leaves, vmapped over images (layout idx/lmask (n_img, cap)).

    A row recorded on several frames (``obs.frame_img``) sits in the lane of its centroid
    image; the factors of its other frames enter as the fixed ``frame_other`` (block
    Jacobi: they move in their own lanes and are refreshed at the next step)."""
    mask = _masks(pmodel, smodel)
    lane_mask = {k: {"global": jax.tree_util.tree_map(lambda _: False, v["global"]),
                     "image": v["image"]} for k, v in mask.items()}
    glob = {k: v["global"] for k, v in params.items()}
    img = {k: v["image"] for k, v in params.items()}
    F = smodel.image_factors(params["scale"], obs)
    if F is not None:  # rows recorded on several frames: the other frames' factors held fixed
        own = obs.frame_img == obs.image[:, None]
        obs = replace(obs, frame_w=jnp.where(own, obs.frame_w, 0.0),
                      frame_other=jnp.sum(jnp.where(own, 0.0, obs.frame_w * F), axis=1))
    lane_obs = jax.tree_util.tree_map(lambda a: a[idx], obs)
    lane_obs = replace(lane_obs, image=jnp.zeros_like(lane_obs.image),
                       frame_img=jnp.zeros_like(lane_obs.frame_img))
    lane_I, lane_s = I_obs[idx], sigma[idx]
    lane_w = jnp.where(lmask, weights[idx], 0.0)

    def resid(p, o, I, s, w):
        m = _gp(pmodel, smodel, p, o) * I
        r = lik.residuals(m, o.intensity, s, w)
        pri = [q.image_prior_residuals(p[k]) for q, k in ((pmodel, "partiality"),
                                                          (smodel, "scale"))]
        pri = [jnp.ravel(x) for x in pri if x is not None]
        return jnp.concatenate([r, *pri]) if pri else r

    def one(img_p, o, I, s, w):
        p0 = {k: {"global": glob[k],
                  "image": jax.tree_util.tree_map(lambda x: x[None], img_p[k])} for k in glob}
        p, info = solve(resid, p0, lane_mask, args=(o, I, s, w), solver="lm", max_iter=max_iter,
                        tol=tol)
        return {k: jax.tree_util.tree_map(lambda x: x[0], p[k]["image"]) for k in p}, info

    new_img, info = jax.vmap(one)(img, lane_obs, lane_I, lane_s, lane_w)
    out = {k: {"global": glob[k], "image": new_img[k]} for k in params}
    return out, info


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _global_step(pmodel, smodel, lik, max_iter, tol, use_ref, params, obs, sigma, weights,
                 ref_obs):
    """LM over the global leaves, I_hkl eliminated (or the reference)."""
    mask = _masks(pmodel, smodel)
    gmask = {k: {"global": v["global"],
                 "image": jax.tree_util.tree_map(lambda _: False, v["image"])}
             for k, v in mask.items()}

    def resid(p, obs, sigma, weights, ref_obs):
        m = _model_I(pmodel, smodel, p, obs, sigma, weights, ref_obs, use_ref)
        return jnp.concatenate([lik.residuals(m, obs.intensity, sigma, weights),
                                _prior(pmodel, smodel, p)])

    return solve(resid, params, gmask, args=(obs, sigma, weights, ref_obs), solver="lm",
                 max_iter=max_iter, tol=tol)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _lbfgs_fit(pmodel, smodel, lik, max_iter, use_ref, params, obs, sigma, weights, ref_obs,
               tol):
    """Joint L-BFGS of all free leaves on the nll in preconditioned variables.

    Preconditioner from the Gauss–Newton matrix with I_hkl held at the current merge:
    per-image K×K blocks of the image leaves are whitened (Cholesky), global leaves are
    scaled by their inverse column norms.
    """
    mask = _masks(pmodel, smodel)
    x0, unflatten, idx, sizes = split_free(params, mask)
    # which free leaves are image leaves (per-image column norms via segment sums)
    paths = [jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(params)[0]]
    is_img = ["'image'" in paths[i] for i in idx]

    # Gauss-Newton column norms with I_hkl held at the current merge
    gp0 = _gp(pmodel, smodel, params, obs)
    I_hkl, _, _ = _merge_arrays(gp0, obs, sigma, weights)
    I_fix = ref_obs if use_ref else I_hkl[obs.refl]

    def r_fixed(x):
        m = _gp(pmodel, smodel, unflatten(x), obs) * I_fix
        return lik.residuals(m, obs.intensity, sigma, weights)

    # tangents of every free leaf (a leaf of image i only moves rows of image i)
    tans = []
    o = 0
    for n in sizes:
        t = jnp.zeros_like(x0).at[o:o + n].set(1.0)
        tans.append(jax.jvp(r_fixed, (x0,), (t,))[1])
        o += n
    offs = np.cumsum([0, *sizes])[:-1]
    img_k = [k for k, (n, im) in enumerate(zip(sizes, is_img, strict=True))
             if im and n == obs.n_img]
    glob_k = [k for k in range(len(sizes)) if k not in img_k]
    # global (and odd-shaped) leaves: diagonal scaling by the inverse column norm
    diag = jnp.ones_like(x0)
    for k in glob_k:
        if is_img[k]:
            c2 = jax.ops.segment_sum(tans[k] ** 2, obs.image, num_segments=sizes[k])
        else:
            c2 = jnp.sum(tans[k] ** 2) * jnp.ones((sizes[k],))
        sc = jnp.where(c2 > 0, 1.0 / jnp.sqrt(jnp.where(c2 > 0, c2, 1.0)), 0.0)
        diag = diag.at[offs[k]:offs[k] + sizes[k]].set(sc)
    # image leaves: per-image Gauss-Newton block whitening, A_i = L_i^-T with L_i L_i^T = M_i
    nk = len(img_k)
    if nk:
        M = jnp.stack([jnp.stack([jax.ops.segment_sum(tans[k] * tans[m], obs.image,
                                                      num_segments=obs.n_img)
                                  for m in img_k], -1) for k in img_k], -2)  # (n_img, K, K)
        dM = jnp.diagonal(M, axis1=-2, axis2=-1)
        # parameters without any data (empty image, wedge of a still) stay where they are
        dead = ~(dM > 1e-12 * jnp.max(dM, axis=-1, keepdims=True) + 1e-300)  # (n_img, K)
        eye = jnp.eye(nk, dtype=bool)
        M = jnp.where(dead[:, :, None] | dead[:, None, :], eye.astype(M.dtype), M)
        M = M + 1e-9 * jax.vmap(jnp.diag)(jnp.diagonal(M, axis1=-2, axis2=-1))
        L = jnp.linalg.cholesky(M)
        A = jnp.swapaxes(jnp.linalg.inv(L), -1, -2)
        A = jnp.where(dead[:, :, None] | dead[:, None, :] | ~jnp.isfinite(A), 0.0, A)
        img_pos = jnp.concatenate([offs[k] + jnp.arange(obs.n_img) for k in img_k])
    else:
        A = None

    def to_x(z):
        x = x0 + diag * z
        if A is None:
            return x
        zi = jnp.reshape(z[img_pos], (nk, obs.n_img)).T  # (n_img, K)
        xi = jnp.einsum("ikl,il->ik", A, zi)
        return x.at[img_pos].set(x0[img_pos] + xi.T.reshape(-1))

    def cost(z):
        p = unflatten(to_x(z))
        m = _model_I(pmodel, smodel, p, obs, sigma, weights, ref_obs, use_ref)
        r = _prior(pmodel, smodel, p)
        return lik.nll(m, obs.intensity, sigma, weights) + 0.5 * jnp.sum(r * r)

    n_free = max(int(x0.shape[0]), 1)
    z, it, gn = lbfgs_loop(cost, jnp.zeros_like(x0), max_iter, tol,
                           grad_norm=lambda g: jnp.sqrt(jnp.sum(g * g) / n_free))
    return unflatten(to_x(z)), it, gn


def _layout(image: np.ndarray, valid: np.ndarray, n_img: int):
    """(n_img, cap) row indices of the valid observations of each image, and the lane mask."""
    rows = np.flatnonzero(valid)
    img = image[rows]
    order = np.argsort(img, kind="stable")
    rows, img = rows[order], img[order]
    counts = np.bincount(img, minlength=n_img)
    cap = bucket_size(int(counts.max()) if counts.size else 1, minimum=8)
    starts = np.cumsum(counts) - counts
    pos = np.arange(rows.size) - starts[img]
    idx = np.zeros((n_img, cap), np.int32)
    lmask = np.zeros((n_img, cap), bool)
    idx[img, pos] = rows
    lmask[img, pos] = True
    return jnp.asarray(idx), jnp.asarray(lmask), counts


@jax.jit
def _sanitize(obs: Observations) -> Observations:
    ok = obs.valid & jnp.isfinite(obs.intensity) & jnp.isfinite(obs.sigma) & (obs.sigma > 0)
    ok &= (obs.refl >= 0) & (obs.refl < obs.n_refl) & (obs.image >= 0) & (obs.image < obs.n_img)
    ok &= jnp.isfinite(obs.var_signal)
    ok &= jnp.isfinite(obs.poisson) & (obs.poisson >= 0)
    for name in ("s2", "d_A", "partiality_stored", "phi_c_rad", "zeta", "phi_lo_rad",
                 "phi_hi_rad", "frames", "eps_invA", "two_theta_rad"):
        ok &= jnp.isfinite(getattr(obs, name))
    fw_ok = (jnp.all(jnp.isfinite(obs.frame_w) & (obs.frame_w >= 0), axis=1)
             & jnp.all((obs.frame_img >= 0) & (obs.frame_img < obs.n_img), axis=1))
    lone_w = jnp.zeros_like(obs.frame_w).at[:, 0].set(1.0)
    lone_i = jnp.zeros_like(obs.frame_img).at[:, 0].set(jnp.where(ok, obs.image, 0))
    use_f = (ok & fw_ok)[:, None]
    return replace(obs, valid=ok,
                   frame_w=jnp.where(use_f, obs.frame_w, lone_w),
                   frame_img=jnp.where(use_f, obs.frame_img, lone_i).astype(jnp.int32),
                   frame_other=jnp.zeros_like(obs.intensity), intensity=jnp.where(ok, obs.intensity, 0.0),
                   sigma=jnp.where(ok, obs.sigma, 1.0),
                   var_signal=jnp.where(ok, obs.var_signal, 0.0),
                   poisson=jnp.where(ok, obs.poisson, 0.0),
                   refl=jnp.where(ok, obs.refl, 0).astype(jnp.int32),
                   image=jnp.where(ok, obs.image, 0).astype(jnp.int32),
                   d_A=jnp.where(ok, obs.d_A, 1.0), s2=jnp.where(ok, obs.s2, 0.0),
                   zeta=jnp.where(ok & (obs.zeta != 0), obs.zeta, 1.0),
                   **{k: jnp.where(ok, getattr(obs, k), d) for k, d in (
                       ("partiality_stored", 1.0), ("phi_c_rad", 0.0), ("phi_lo_rad", 0.0),
                       ("phi_hi_rad", 0.0), ("frames", 1.0), ("eps_invA", 0.0),
                       ("two_theta_rad", 0.0))})


# ----------------------------------------------------------------------------- driver

def fit_scales(obs: Observations, partiality: PartialityModel, scale_model: ScaleModel,
               likelihood: Likelihood | None = None, *, reference=None, iterations: int = 3,
               solver: str = "lm", refine_globals: bool = True, error_model: bool = True,
               params0: dict | None = None, max_iter_image: int = 20,
               max_iter_global: int = 20, max_iter_lbfgs: int = 500,
               lbfgs_tol: float = 1e-4, lbfgs_chunk: int = 50, lm_cycles: int = 2,
               lm_tol: float = 1e-9, min_obs_per_image: int | None = None,
               min_partiality: float | None = None,
               error_model0: ErrorModel | None = None,
               robust_weights0: Any = None) -> ScaleFit:
    """Fit scales and partiality parameters and merge.

    Args:
        obs: :class:`Observations` (padded; invalid/non-finite rows are ignored).
        partiality, scale_model: the models (their ``free()`` masks select what is refined).
        likelihood: default :class:`~jfx.scale.likelihood.NormalLikelihood`.
        reference: (n_refl,) reference intensities on the corrected scale (NaN = missing), or
            None (reference-free: the scale gauge is fixed by mean ln G = 0, mean B = 0).
        iterations: outer iterations (≥ 1).
        solver: ``lm`` (alternating, per-image vmapped LM) or ``lbfgs`` (joint L-BFGS).
        refine_globals: refine the global leaves (mosaicity) when free.
        error_model: refit σ'² = a²(σ² + (b·I)²) after every iteration.
        params0: starting parameters (default: the models' ``init_params``).
        max_iter_image, max_iter_global, max_iter_lbfgs: iteration caps.
        lbfgs_tol: L-BFGS stop on the rms gradient in scaled units (1 unit ≈ 1 standard
            error of the parameter).
        lbfgs_chunk: L-BFGS iterations between preconditioner rebuilds (restarts).
        lm_cycles: (merge, image LM, global LM) cycles per iteration (``lm``).
        lm_tol: LM stop on the relative cost decrease per step.
        min_obs_per_image: images with fewer valid observations are not fitted (default:
            number of free image parameters + 1).
        min_partiality: after every iteration, rows whose current model partiality is below
            this get weight 0 (``--min-partiality`` for refined models); ``None`` = off (the
            builder already filtered on the stored partiality).
        robust_weights0: (n,) robust per-row weights in [0, 1] to start from (e.g. the
            previous call's ``obs_weight``); default 1.
        error_model0: error model to apply from the start (e.g. the previous call's
            ``fit.error_model`` when the caller iterates with ``iterations=1``); ``None`` =
            start with the raw σ.
    Returns:
        :class:`ScaleFit`.
    Raises:
        ValueError: unknown solver, iterations < 1, or reference of the wrong length.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown scaling solver {solver!r} (known: {', '.join(SOLVERS)})")
    if int(iterations) < 1:
        raise ValueError("scaling iterations must be >= 1")
    lik = NormalLikelihood() if likelihood is None else likelihood
    obs = _sanitize(obs)
    use_ref = reference is not None
    if use_ref:
        ref = np.asarray(reference, np.float64).reshape(-1)
        if ref.shape[0] != obs.n_refl:
            raise ValueError(f"reference has {ref.shape[0]} reflections, expected {obs.n_refl}")
        ref_ok = np.isfinite(ref)
        ref_obs = jnp.asarray(np.where(ref_ok, ref, 0.0))[obs.refl]
        base_w = obs.valid & jnp.asarray(ref_ok)[obs.refl]
    else:
        ref_obs = jnp.zeros_like(obs.intensity)
        base_w = obs.valid
    base_w = base_w.astype(jnp.float64)

    params = params0 if params0 is not None else {
        "partiality": partiality.init_params(obs), "scale": scale_model.init_params(obs)}
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)
    mask = _masks(partiality, scale_model)
    n_img_free = sum(1 for v in mask.values() for m in jax.tree_util.tree_leaves(v["image"]) if m)
    min_obs = n_img_free + 1 if min_obs_per_image is None else int(min_obs_per_image)

    valid_np = np.asarray(base_w) > 0
    image_np = np.asarray(obs.image)
    counts = np.bincount(image_np[valid_np], minlength=obs.n_img)
    image_ok = counts >= min_obs
    fit_rows = valid_np & image_ok[image_np]
    base_w = base_w * jnp.asarray(fit_rows)  # rows of unfitted images stay out of the merge
    idx, lmask, _ = _layout(image_np, fit_rows, obs.n_img)
    image_ok_j = jnp.asarray(image_ok)
    has_global = _has_free(mask, "global") and refine_globals

    weights = base_w
    if robust_weights0 is not None:  # the robust (IRLS) weights of a previous call
        weights = base_w * jnp.asarray(np.clip(np.nan_to_num(np.asarray(robust_weights0,
                                                                         np.float64)), 0, 1))
    em = ErrorModel.identity() if error_model0 is None else error_model0
    s2_refl = _refl_s2(obs)

    def at_model(params, sigma):
        """σ at the model intensity of the merge made with ``sigma``."""
        I_, s_, _, gp_ = _merge(partiality, scale_model, params, obs, sigma, weights)
        return _model_sigma(obs, gp_, I_, s_, s2_refl, em)

    # start: merge with the integrator's σ, then σ at the model intensity
    sigma, _ = at_model(params, obs.sigma)
    history = []
    for it in range(int(iterations)):
        n_it = {}
        if solver == "lm":
            for _ in range(max(int(lm_cycles), 1)):
                sigma, _ = at_model(params, sigma)
                if use_ref:
                    I_obs = ref_obs
                else:
                    I_hkl, _, _, _ = _merge(partiality, scale_model, params, obs, sigma, weights)
                    I_obs = I_hkl[obs.refl]
                if n_img_free:
                    params, info = _image_step(partiality, scale_model, lik,
                                               int(max_iter_image), float(lm_tol), params, obs,
                                               idx, lmask, I_obs, sigma, weights)
                    n_it["image_lm_iterations"] = int(jnp.max(info.iterations))
                if not use_ref:
                    params = _gauge(partiality, scale_model, params, image_ok_j)
                if has_global:
                    params, info = _global_step(partiality, scale_model, lik,
                                                int(max_iter_global), float(lm_tol), use_ref,
                                                params, obs, sigma, weights, ref_obs)
                    n_it["global_lm_iterations"] = int(info.iterations)
                    if not use_ref:
                        params = _gauge(partiality, scale_model, params, image_ok_j)
        else:
            opt_mask = mask if refine_globals else {
                k: {"global": jax.tree_util.tree_map(lambda _: False, v["global"]),
                    "image": v["image"]} for k, v in mask.items()}
            if any(jax.tree_util.tree_leaves(opt_mask)):
                # L-BFGS in chunks; the preconditioner is rebuilt at every restart
                done_it = 0
                while done_it < int(max_iter_lbfgs):
                    chunk = min(int(lbfgs_chunk), int(max_iter_lbfgs) - done_it)
                    params, n_opt, gn = _lbfgs_fit(
                        _Masked(partiality, opt_mask["partiality"]),
                        _Masked(scale_model, opt_mask["scale"]), lik, chunk, use_ref, params,
                        obs, sigma, jnp.where(jnp.asarray(fit_rows), weights, 0.0), ref_obs,
                        float(lbfgs_tol))
                    done_it += int(n_opt)
                    if float(gn) <= lbfgs_tol or int(n_opt) < chunk:
                        break
                # images without usable rows have zero columns: step 0, start kept
                n_it["lbfgs_iterations"] = done_it
            if not use_ref:
                params = _gauge(partiality, scale_model, params, image_ok_j)

        # error model on the current scale (σ before it at the model intensity), then
        # robust weights
        I_hkl, s_hkl, _, gp = _merge(partiality, scale_model, params, obs, sigma, weights)
        ref_I = ref_obs if use_ref else I_hkl[obs.refl]
        sigma, base = _model_sigma(obs, gp, I_hkl, s_hkl, s2_refl, em)
        if error_model:
            gp_np = np.asarray(gp)
            safe_gp = np.where(np.abs(gp_np) > 1e-12, gp_np, 1.0)
            em = fit_error_model(np.asarray(obs.refl), np.asarray(obs.intensity) / safe_gp,
                                 np.asarray(base) / np.abs(safe_gp), n_refl=obs.n_refl,
                                 valid=fit_rows & (np.abs(gp_np) > 1e-6)
                                 & (np.asarray(weights) >= 0.5))  # robustly down-weighted rows out
            sigma, _ = _model_sigma(obs, gp, I_hkl, s_hkl, s2_refl, em)
        weights = _irls(lik, obs, gp, ref_I, sigma, base_w)
        if min_partiality is not None:  # the refined model may move rows below the limit
            weights = jnp.where(_eval(partiality, params["partiality"], obs) >= min_partiality,
                                weights, 0.0)
        c = float(_cost(partiality, scale_model, lik, use_ref, params, obs, sigma, weights,
                        ref_obs))
        history.append({"iteration": it + 1, "cost": c,
                        "n_used": int(np.sum(np.asarray(weights) > 0)),
                        "error_model_a": float(em.a), "error_model_b": float(em.b), **n_it})

    if use_ref:
        # the reference sets the scale; reflections it lacks are measured data all the same
        # and are merged on that scale (never dropped)
        extra = np.asarray(obs.valid) & image_ok[image_np] & ~ref_ok[np.asarray(obs.refl)]
        if min_partiality is not None:
            extra &= np.asarray(_eval(partiality, params["partiality"], obs)) >= min_partiality
        if extra.any():
            extra_j = jnp.asarray(extra)
            weights = jnp.where(extra_j, 1.0, weights)
            for _ in range(2):  # σ of those rows at their own merged intensity
                I_a, s_a, _, gp_a = _merge(partiality, scale_model, params, obs, sigma, weights)
                sig_a, _ = _model_sigma(obs, gp_a, I_a, s_a, s2_refl, em)
                sigma = jnp.where(extra_j, sig_a, sigma)
    I_hkl, s_hkl, den, gp = _merge(partiality, scale_model, params, obs, sigma, weights)
    n_obs = np.bincount(np.asarray(obs.refl)[np.asarray(weights) > 0], minlength=obs.n_refl)
    has = np.asarray(den) > 0
    desc_s = scale_model.describe(params["scale"])
    desc_p = partiality.describe(params["partiality"])
    obs_scale = np.asarray(_eval(scale_model, params["scale"], obs))
    desc_s = {**desc_s, **(scale_model.image_values(params["scale"], obs) or {})}
    if "scale" in desc_s:
        G = np.asarray(desc_s["scale"], np.float64)
    else:  # a model without per-image parameters: geometric mean of g over the image
        use = np.asarray(obs.valid) & (obs_scale > 0)
        cnt = np.bincount(image_np[use], minlength=obs.n_img)
        lg = np.bincount(image_np[use], np.log(obs_scale[use]), minlength=obs.n_img)
        G = np.exp(np.where(cnt > 0, lg / np.maximum(cnt, 1), 0.0))
    B = np.asarray(desc_s.get("bfactor", np.zeros(obs.n_img)), np.float64)
    return ScaleFit(
        params=params,
        intensity=np.where(has, np.asarray(I_hkl), np.nan),
        sigma=np.where(has, np.asarray(s_hkl), np.nan),
        n_obs=n_obs, scale=np.where(image_ok, G, 1.0), bfactor=np.where(image_ok, B, 0.0),
        wedge_deg=(np.asarray(desc_p["wedge_deg"]) if "wedge_deg" in desc_p else None),
        mosaicity_deg=desc_p.get("mosaicity_deg"),
        error_model=em, image_ok=image_ok,
        obs_scale=obs_scale,
        obs_partiality=np.asarray(_eval(partiality, params["partiality"], obs)),
        obs_sigma=np.asarray(sigma), obs_weight=np.asarray(weights), history=history,
        obs_sigma_reported=float(em.a) * np.sqrt(
            np.asarray(obs.sigma) ** 2
            + ((float(em.b) ** 2 + np.asarray(obs.partial_err) ** 2)
               * (np.asarray(gp) * np.asarray(I_hkl)[np.asarray(obs.refl)]) ** 2)))


@partial(jax.jit, static_argnums=(0,))
def _eval(model, params, obs):
    """A model's per-observation values (one compiled kernel)."""
    return model(params, obs)


@partial(jax.jit, static_argnums=(0,))
def _irls(lik, obs, gp, ref_I, sigma, base_w):
    """Robust weights of the rows from their normalised residuals."""
    z = (obs.intensity - gp * ref_I) / sigma
    return base_w * jnp.where(base_w > 0, lik.irls_weights(z), 0.0)


@dataclasses.dataclass(frozen=True)
class _Masked:
    """A model whose free mask is overridden (hashable wrapper for the jitted kernels)."""

    model: Any
    mask_items: tuple

    def __init__(self, model, mask):
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "mask_items", tuple(
            (jax.tree_util.keystr(p), bool(v))
            for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]))

    def free(self, settings=None):
        base = self.model.free()
        d = dict(self.mask_items)
        return jax.tree_util.tree_map_with_path(lambda p, v: d[jax.tree_util.keystr(p)], base)

    def __call__(self, params, obs):
        return self.model(params, obs)

    def init_params(self, obs):
        return self.model.init_params(obs)

    def prior_residuals(self, params):
        return self.model.prior_residuals(params)

    def image_prior_residuals(self, params):
        return self.model.image_prior_residuals(params)

    def image_factors(self, params, obs):
        return self.model.image_factors(params, obs)
