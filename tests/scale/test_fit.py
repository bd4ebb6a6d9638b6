"""fit_scales on simulated observation tables with known G, B, mosaicity and wedge."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from jfx.models._pytree import replace
from jfx.scale.base import PartialityModel
from jfx.scale.fit import fit_scales
from jfx.scale.likelihood import HuberLikelihood
from jfx.scale.models import ImageScale
from jfx.scale.observations import make_observations
from jfx.scale.partiality import FixedPartiality, RotationPartiality, UnityPartiality


def _base(rng, n_refl, n_img, per):
    I_true = rng.exponential(1000.0, n_refl)
    d = 1.0 / np.sqrt(rng.uniform(1 / 10.0**2, 1 / 1.5**2, n_refl))
    G = np.exp(rng.normal(0.0, 0.3, n_img))
    refl = np.concatenate([rng.choice(n_refl, per, replace=False) for _ in range(n_img)])
    img = np.repeat(np.arange(n_img), per)
    return I_true, d, G, refl, img


def still_sim(seed=0, n_refl=2000, n_img=40, per=300, bfactor=True, mos_deg=None,
              domain_invA=0.0, width_factor=None):
    """Stills with stored partiality (or Ewald-offset partiality from ``mos_deg``), G and B;
    ``width_factor`` (n_img,) scales each crystal's Ewald-offset width."""
    rng = np.random.default_rng(seed)
    I_true, d, G, refl, img = _base(rng, n_refl, n_img, per)
    B = rng.uniform(-10.0, 10.0, n_img) if bfactor else np.zeros(n_img)
    s2 = 0.25 / d[refl] ** 2
    n = refl.size
    cols = {"refl": refl, "image": img, "d_A": d[refl], "is_still": np.ones(n, bool)}
    if mos_deg is None:
        P = rng.uniform(0.2, 1.0, n)
    else:
        sig_eps = np.sqrt((np.radians(mos_deg) / d[refl]) ** 2 + domain_invA**2)
        eps = rng.uniform(-2.0, 2.0, n) * sig_eps
        if width_factor is not None:  # the processing predicts ε; the crystal sets the width
            sig_eps = sig_eps * np.asarray(width_factor)[img]
        P = np.exp(-eps**2 / (2 * sig_eps**2))
        cols["eps_invA"] = eps
    mu = G[img] * np.exp(-2.0 * B[img] * s2) * P * I_true[refl]
    sig = np.sqrt(mu + 20.0)
    cols.update(intensity=mu + rng.normal(0.0, 1.0, n) * sig, sigma=sig, partiality_stored=P)
    return make_observations(cols, n_refl=n_refl, n_img=n_img), G, B, I_true


def rot_sim(seed=0, n_refl=1500, n_img=40, per=150, mos_deg=0.15, inc_deg=0.1, wedge=None,
            max_frames=3):
    """Summed rotation rows cut by [φ_lo, φ_lo + frames·w_i]; Kabsch partiality by hand."""
    rng = np.random.default_rng(seed)
    I_true, d, G, refl, img = _base(rng, n_refl, n_img, per)
    n = refl.size
    inc = np.radians(inc_deg)
    w = np.full(n_img, inc_deg) if wedge is None else wedge
    frames = rng.integers(1, max_frames + 1, n)
    zeta = rng.uniform(0.3, 1.0, n) * rng.choice([-1, 1], n)
    lo = img * 5.0 * inc
    hi_true = lo + frames * np.radians(w[img])
    sm = np.radians(mos_deg) / np.abs(zeta)
    phi_c = rng.uniform(lo - 1.5 * sm, hi_true + 1.5 * sm)
    P = 0.5 * (erf((hi_true - phi_c) / (np.sqrt(2) * sm)) - erf((lo - phi_c) / (np.sqrt(2) * sm)))
    keep = P > 0.05
    mu = G[img] * P * I_true[refl]
    sig = np.sqrt(mu + 10.0)
    cols = {"refl": refl, "image": img, "intensity": mu + rng.normal(0.0, 1.0, n) * sig,
            "sigma": sig,
                "d_A": d[refl], "phi_c_rad": phi_c, "zeta": zeta, "phi_lo_rad": lo,
                "phi_hi_rad": lo + frames * inc, "frames": frames, "partiality_stored": P}
    cols = {k: v[keep] for k, v in cols.items()}
    return make_observations(cols, n_refl=n_refl, n_img=n_img, phi_increment_rad=inc), G, I_true


def _gauge(G, B):
    lg = np.log(G)
    return lg - lg.mean(), B - B.mean()


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_recover_G_and_B(solver):
    obs, G, B, _ = still_sim()
    fit = fit_scales(obs, FixedPartiality(), ImageScale(refine_bfactor=True), iterations=4,
                     solver=solver)
    lg_t, B_t = _gauge(G, B)
    assert np.corrcoef(np.log(fit.scale), lg_t)[0, 1] > 0.99
    assert np.corrcoef(fit.scale, G)[0, 1] > 0.99
    assert abs(np.mean(np.log(fit.scale))) < 1e-9  # gauge: mean ln G = 0
    assert np.sqrt(np.mean((fit.bfactor - B_t) ** 2)) < 1.5
    assert fit.image_ok.all() and len(fit.history) == 4
    assert abs(float(fit.error_model.a) - 1.0) < 0.1


def test_error_model_inflated_sigmas_and_carry_over():
    obs, _, _, _ = still_sim(seed=10, bfactor=False, n_img=30, per=300)
    # the reported σ are too small by 1/1.5: the error model must find a ≈ 1.5
    obs = replace(obs, sigma=obs.sigma / 1.5)
    fit = fit_scales(obs, FixedPartiality(), ImageScale(), iterations=3)
    assert float(fit.error_model.a) == pytest.approx(1.5, rel=0.1)
    v = np.asarray(obs.valid)
    np.testing.assert_allclose(np.median(fit.obs_sigma[v] / np.asarray(obs.sigma)[v]),
                               float(fit.error_model.a), rtol=0.05)
    # one more iteration started from the previous parameters and error model
    fit2 = fit_scales(obs, FixedPartiality(), ImageScale(), iterations=1, params0=fit.params,
                      error_model0=fit.error_model)
    np.testing.assert_allclose(np.log(fit2.scale), np.log(fit.scale), atol=2e-3)
    assert float(fit2.error_model.a) == pytest.approx(float(fit.error_model.a), rel=0.02)


def test_lm_and_lbfgs_agree_and_merge_matches_truth():
    obs, G, B, I_true = still_sim(seed=3)
    f_lm = fit_scales(obs, FixedPartiality(), ImageScale(refine_bfactor=True), iterations=4)
    f_op = fit_scales(obs, FixedPartiality(), ImageScale(refine_bfactor=True), iterations=4,
                      solver="lbfgs")
    np.testing.assert_allclose(np.log(f_lm.scale), np.log(f_op.scale), atol=0.01)
    np.testing.assert_allclose(f_lm.bfactor, f_op.bfactor, atol=0.3)
    ok = np.isfinite(f_lm.intensity) & (f_lm.n_obs >= 3)
    # merged I = I_true · exp(mean lnG) · exp(-2 mean(B) s²) in the fitted gauge
    lg = np.log(G).mean()
    s2 = np.bincount(np.asarray(obs.refl), np.asarray(obs.s2), obs.n_refl) / np.maximum(
        np.bincount(np.asarray(obs.refl), minlength=obs.n_refl), 1)
    expect = I_true * np.exp(lg - 2.0 * B.mean() * s2)
    rel = (f_lm.intensity[ok] - expect[ok]) / f_lm.sigma[ok]
    assert abs(np.median(rel)) < 0.3 and np.std(rel) < 1.5


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_reference_equal_to_truth_recovers_G_in_one_iteration(solver):
    obs, G, B, I_true = still_sim(seed=4)
    fit = fit_scales(obs, FixedPartiality(), ImageScale(refine_bfactor=True),
                     reference=I_true, iterations=1, error_model=False, solver=solver)
    # absolute scale: no gauge freedom with a reference
    assert np.sqrt(np.mean((np.log(fit.scale) - np.log(G)) ** 2)) < 0.02
    assert np.sqrt(np.mean((fit.bfactor - B) ** 2)) < 1.0


def test_rotation_mosaicity_from_summed_partials():
    obs, G, _ = rot_sim()
    for solver in ("lm", "lbfgs"):
        fit = fit_scales(obs, RotationPartiality(mosaicity_deg=0.1), ImageScale(),
                         iterations=4, solver=solver)
        assert fit.mosaicity_deg == pytest.approx(0.15, rel=0.10)
        assert np.corrcoef(fit.scale, G)[0, 1] > 0.99


def test_still_mosaicity_from_ewald_offsets():
    obs, G, _, _ = still_sim(seed=5, bfactor=False, mos_deg=0.3, n_img=30, per=200)
    fit = fit_scales(obs, RotationPartiality(mosaicity_deg=0.15), ImageScale(), iterations=4)
    assert fit.mosaicity_deg == pytest.approx(0.3, rel=0.10)
    assert np.corrcoef(fit.scale, G)[0, 1] > 0.99


def test_still_domain_width_recovered_and_needed():
    """σ_ε² = (q σ_M)² + σ₀²: with the domain term free both widths come back; without it
    the fit cannot describe the low-resolution partialities (larger residual scale error)."""
    obs, G, _, I_true = still_sim(seed=11, bfactor=False, mos_deg=0.2, domain_invA=1.5e-3,
                             n_img=30, per=250)
    fit = fit_scales(obs, RotationPartiality(mosaicity_deg=0.1, refine_domain=True),
                     ImageScale(), iterations=4)
    got = fit.params["partiality"]
    assert fit.mosaicity_deg == pytest.approx(0.2, rel=0.15)
    assert float(np.exp(got["global"]["log_domain"])) == pytest.approx(1.5e-3, rel=0.15)
    assert np.corrcoef(fit.scale, G)[0, 1] > 0.99
    # without the term σ_M has to absorb it: wrong width, worse merged intensities
    fit0 = fit_scales(obs, RotationPartiality(mosaicity_deg=0.1), ImageScale(), iterations=4)
    assert abs(fit0.mosaicity_deg / 0.2 - 1.0) > 0.2
    ok = np.isfinite(fit.intensity) & np.isfinite(fit0.intensity)
    cc = [np.corrcoef(f.intensity[ok], I_true[ok])[0, 1] for f in (fit, fit0)]
    assert cc[0] > cc[1]


def test_per_crystal_width_recovered_and_needed():
    """Crystals of one sample differ in mosaicity / domain size: each still's width factor
    (``image.log_width``) comes back, and the merge is better than with one common width."""
    f_true = np.exp(np.random.default_rng(3).normal(0.0, 0.35, 30))
    obs, _G, _, I_true = still_sim(seed=12, bfactor=False, mos_deg=0.2, n_img=30, per=250,
                                   width_factor=f_true)
    model = RotationPartiality(mosaicity_deg=0.1, refine_domain=True)
    # the program's stills cutoff (scale.min_recorded_fraction): a reflection seen once in
    # a tail merges to a wild I/P whichever width model is used
    fit = fit_scales(obs, model, ImageScale(), iterations=4, min_partiality=0.4)
    f = model.describe(fit.params["partiality"])["width_factor"]
    assert np.corrcoef(np.log(f), np.log(f_true))[0, 1] > 0.9
    w = np.asarray(fit.params["partiality"]["image"]["log_width"])
    assert abs(np.mean(w)) < 1e-9  # gauge: the global widths carry the mean
    one = dataclasses.replace(model, refine_crystal_width=False)
    fit0 = fit_scales(obs, one, ImageScale(), iterations=4, min_partiality=0.4)
    assert "log_width" not in fit0.params["partiality"]["image"]
    ok = np.isfinite(fit.intensity) & np.isfinite(fit0.intensity)
    cc = [np.corrcoef(x.intensity[ok], I_true[ok])[0, 1] for x in (fit, fit0)]
    assert cc[0] > cc[1]


def test_per_image_wedge_recovered():
    rng = np.random.default_rng(5)
    w_true = 0.1 * (1 + 0.3 * rng.uniform(-1, 1, 40))
    obs, _G, _ = rot_sim(seed=1, wedge=w_true, max_frames=1, per=200)
    model = RotationPartiality(mosaicity_deg=0.15, refine_mosaicity=False, refine_wedge=True)
    f_lm = fit_scales(obs, model, ImageScale(), iterations=4)
    rel = f_lm.wedge_deg / w_true - 1.0
    assert np.sqrt(np.mean(rel**2)) < 0.08
    assert np.corrcoef(f_lm.wedge_deg, w_true)[0, 1] > 0.9
    # without -w the wedge stays at the scan increment
    f_fix = fit_scales(obs, RotationPartiality(mosaicity_deg=0.15, refine_mosaicity=False),
                       ImageScale(), iterations=1)
    np.testing.assert_allclose(f_fix.wedge_deg, 0.1)
    # --min-partiality on the refined model drops exactly the rows below the limit
    f_min = fit_scales(obs, RotationPartiality(mosaicity_deg=0.15, refine_mosaicity=False),
                       ImageScale(), iterations=1, error_model=False, min_partiality=0.3)
    low = np.asarray(obs.valid) & (f_min.obs_partiality < 0.3)
    assert low.sum() > 50
    assert (f_min.obs_weight[low] == 0).all()
    assert (f_min.obs_weight[np.asarray(obs.valid) & ~low] > 0).all()


def test_fixed_and_unity_fit_leave_no_partiality_params():
    obs, _G, _B, _ = still_sim(seed=6, bfactor=False, n_img=20, per=200)
    for model in (FixedPartiality(), UnityPartiality()):
        fit = fit_scales(obs, model, ImageScale(), iterations=2)
        assert fit.params["partiality"] == {"global": {}, "image": {}}
        assert fit.mosaicity_deg is None and fit.wedge_deg is None
    np.testing.assert_allclose(fit.obs_partiality, 1.0)


@dataclasses.dataclass(frozen=True)
class LorentzianStill(PartialityModel):
    """Test-only model: P = 1/(1 + (ε/γ)²) with a refinable global ln γ (Å⁻¹)."""

    gamma0: float = 1e-3

    def init_params(self, obs):
        return {"global": {"log_gamma": jnp.log(jnp.asarray(self.gamma0))}, "image": {}}

    def __call__(self, params, obs):
        g = jnp.exp(params["global"]["log_gamma"])
        return 1.0 / (1.0 + (obs.eps_invA / g) ** 2)

    def free(self, settings=None):
        return {"global": {"log_gamma": True}, "image": {}}


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_custom_partiality_subclass_is_fitted(solver):
    rng = np.random.default_rng(7)
    n_refl, n_img, per, gamma = 1500, 30, 200, 2.5e-3
    I_true, d, G, refl, img = _base(rng, n_refl, n_img, per)
    eps = rng.uniform(-3, 3, refl.size) * gamma
    mu = G[img] / (1 + (eps / gamma) ** 2) * I_true[refl]
    sig = np.sqrt(mu + 10)
    obs = make_observations({"refl": refl, "image": img, "intensity": mu + rng.normal(size=mu.size)
                                 * sig, "sigma": sig, "d_A": d[refl], "eps_invA": eps,
                                 "is_still": np.ones(refl.size, bool)}, n_refl=n_refl, n_img=n_img)
    fit = fit_scales(obs, LorentzianStill(), ImageScale(), iterations=4, solver=solver)
    got = float(np.exp(fit.params["partiality"]["global"]["log_gamma"]))
    assert got == pytest.approx(gamma, rel=0.05)
    assert np.corrcoef(fit.scale, G)[0, 1] > 0.99


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_empty_images_nans_and_huber_outliers(solver):
    obs, G, _B, _ = still_sim(seed=8, bfactor=False, n_img=20, per=200)
    n = int(np.sum(np.asarray(obs.valid)))
    I = np.asarray(obs.intensity).copy()
    img = np.asarray(obs.image).copy()
    I[5] = np.nan  # a NaN row is ignored
    rng = np.random.default_rng(0)
    bad = rng.choice(np.arange(6, n), 80, replace=False)
    I[bad] += 30 * np.asarray(obs.sigma)[bad]  # gross outliers
    img[img == 3] = 4  # image 3 is now empty (its rows belong to image 4 → wrong G there)
    keep = np.asarray(obs.image) != 3
    obs2 = replace(obs, intensity=jnp.asarray(I), image=jnp.asarray(img),
                   valid=obs.valid & jnp.asarray(keep))
    fit = fit_scales(obs2, FixedPartiality(), ImageScale(), HuberLikelihood(), iterations=4,
                     solver=solver)
    assert not fit.image_ok[3] and fit.scale[3] == 1.0
    assert np.isfinite(fit.scale).all() and np.isfinite(fit.intensity[fit.n_obs > 0]).all()
    others = np.arange(20) != 3
    lg = np.log(G[others])
    assert np.corrcoef(np.log(fit.scale[others]), lg - lg.mean())[0, 1] > 0.99
    assert fit.obs_weight[5] == 0.0
    assert np.median(fit.obs_weight[bad]) < 0.2  # Huber down-weights the outliers


def test_bad_arguments():
    obs, _, _, _ = still_sim(seed=9, n_img=4, per=50, n_refl=100)
    with pytest.raises(ValueError):
        fit_scales(obs, FixedPartiality(), ImageScale(), solver="adam")
    with pytest.raises(ValueError):
        fit_scales(obs, FixedPartiality(), ImageScale(), iterations=0)
    with pytest.raises(ValueError):
        fit_scales(obs, FixedPartiality(), ImageScale(), reference=np.ones(3))
