"""Partiality / scale models and likelihoods against hand-computed values and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from jfx.models._pytree import replace
from jfx.physics.partiality import FWHM_TO_SIGMA
from jfx.scale.likelihood import HuberLikelihood, NormalLikelihood, StudentTLikelihood
from jfx.scale.models import ImageScale
from jfx.scale.observations import make_observations, observations_from_table
from jfx.scale.partiality import (
    AutoPartiality,
    FixedPartiality,
    RotationPartiality,
    UnityPartiality,
)
from jfx.scale.settings import ScaleSettings


def _rot_obs():
    phi_c = np.radians([10.05, 10.00, 9.93, 10.31, 20.0])
    zeta = np.array([0.8, -0.4, 1.0, 0.25, 0.6])
    first = np.array([100, 99, 99, 101, 199])
    frames = np.array([1, 2, 1, 3, 2])
    inc = np.radians(0.1)
    lo = first * inc
    cols = {"refl": np.arange(5), "image": np.array([0, 1, 1, 2, 2]), "intensity": np.ones(5),
                "sigma": np.ones(5), "d_A": np.array([2.0, 3.0, 1.5, 5.0, 2.5]), "phi_c_rad": phi_c,
                "zeta": zeta, "phi_lo_rad": lo, "phi_hi_rad": lo + frames * inc, "frames": frames}
    return make_observations(cols, n_refl=5, n_img=3, wavelength_A=1.0,
                             phi_increment_rad=inc), cols


def test_rotation_partiality_matches_erf_formula():
    obs, c = _rot_obs()
    model = RotationPartiality(mosaicity_deg=0.07)
    p = model.init_params(obs)
    got = np.asarray(model(p, obs))[:5]
    s = np.radians(0.07)
    hi = c["phi_lo_rad"] + c["frames"] * np.radians(0.1)
    ref = 0.5 * (erf(np.abs(c["zeta"]) * (hi - c["phi_c_rad"]) / (np.sqrt(2) * s))
                 - erf(np.abs(c["zeta"]) * (c["phi_lo_rad"] - c["phi_c_rad"]) / (np.sqrt(2) * s)))
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-14)
    assert 0.05 < ref.min() and ref.max() <= 1.0  # the rows are genuinely partial/full mixes
    # a wider per-image wedge on image 2 changes only image-2 rows, as the formula says
    p2 = {"global": p["global"], "image": {"wedge_deg": jnp.array([0.1, 0.1, 0.13])}}
    got2 = np.asarray(model(p2, obs))[:5]
    hi2 = c["phi_lo_rad"] + c["frames"] * np.radians(np.array([0.1, 0.1, 0.1, 0.13, 0.13]))
    ref2 = 0.5 * (erf(np.abs(c["zeta"]) * (hi2 - c["phi_c_rad"]) / (np.sqrt(2) * s))
                  - erf(np.abs(c["zeta"]) * (c["phi_lo_rad"] - c["phi_c_rad"]) / (np.sqrt(2) * s)))
    np.testing.assert_allclose(got2, ref2, rtol=1e-10, atol=1e-14)


def test_still_partiality_matches_gaussian():
    lam, bw = 1.2, 0.01
    d = np.array([2.0, 3.0, 4.0])
    eps = np.array([0.0, 1e-3, -2e-3])
    obs = make_observations({"refl": np.arange(3), "image": np.zeros(3, int),
                             "intensity": np.ones(3),
                                 "sigma": np.ones(3), "d_A": d, "eps_invA": eps,
                                 "is_still": np.ones(3, bool)},
                            n_refl=3, n_img=1, wavelength_A=lam)
    model = RotationPartiality(mosaicity_deg=0.2, bandwidth_fwhm=bw)
    got = np.asarray(model(model.init_params(obs), obs))[:3]
    tt = 2 * np.arcsin(lam / (2 * d))
    sig = np.sqrt((np.radians(0.2) / d) ** 2
                  + (2 * np.sin(tt / 2) ** 2 * bw * float(FWHM_TO_SIGMA) / lam) ** 2)
    np.testing.assert_allclose(got, np.exp(-eps**2 / (2 * sig**2)), rtol=1e-12)
    assert got[0] == pytest.approx(1.0)
    # d/d ln σ_M by autodiff = central finite difference = analytic
    # dP/dlnσ_M = P · ε²/σ_ε² · (q σ_M)²/σ_ε²
    p = model.init_params(obs)

    def f(lm):
        return jnp.sum(model({"global": {"log_mosaicity": lm}, "image": p["image"]}, obs)[:3])

    lm0 = p["global"]["log_mosaicity"]
    g = float(jax.grad(f)(lm0))
    h = 1e-6
    assert g == pytest.approx(float((f(lm0 + h) - f(lm0 - h)) / (2 * h)), rel=1e-6)
    ana = got * eps**2 / sig**2 * (np.radians(0.2) / d) ** 2 / sig**2
    assert g == pytest.approx(float(np.sum(ana)), rel=1e-8)
    assert g > 0


def test_gradients_match_finite_differences():
    obs, _ = _rot_obs()
    model = RotationPartiality(mosaicity_deg=0.07)
    p = model.init_params(obs)
    w = jnp.arange(1.0, obs.size + 1.0) * obs.valid

    @jax.jit
    def f(lm, wedge):
        q = {"global": {"log_mosaicity": lm}, "image": {"wedge_deg": wedge}}
        return jnp.sum(w * model(q, obs))

    lm0, w0 = p["global"]["log_mosaicity"], jnp.array([0.1, 0.11, 0.09])
    g_lm, g_w = jax.grad(f, argnums=(0, 1))(lm0, w0)
    h = 1e-6
    fd_lm = (f(lm0 + h, w0) - f(lm0 - h, w0)) / (2 * h)
    np.testing.assert_allclose(float(g_lm), float(fd_lm), rtol=1e-6)
    for i in range(3):
        e = jnp.zeros(3).at[i].set(h)
        fd = (f(lm0, w0 + e) - f(lm0, w0 - e)) / (2 * h)
        np.testing.assert_allclose(float(g_w[i]), float(fd), rtol=1e-5, atol=1e-9)
    assert abs(float(g_lm)) > 1e-3  # not trivially zero
    # scale model: d/dB of G exp(-2 B s2) = -2 s2 g
    sm = ImageScale(refine_bfactor=True)
    ps = sm.init_params(obs)
    ps = {"global": {}, "image": {"lnG": jnp.array([0.1, -0.2, 0.3]),
                                  "B": jnp.array([5.0, -3.0, 1.0])}}
    g = np.asarray(sm(ps, obs))
    s2 = 0.25 / np.asarray(obs.d_A) ** 2
    img = np.asarray(obs.image)
    np.testing.assert_allclose(g, np.exp(np.array([0.1, -0.2, 0.3])[img]
                                         - 2 * np.array([5.0, -3.0, 1.0])[img] * s2))
    gb = jax.grad(lambda B: jnp.sum(sm({"global": {}, "image": {"lnG": ps["image"]["lnG"],
                                                                "B": B}}, obs)))(ps["image"]["B"])
    np.testing.assert_allclose(np.asarray(gb), np.bincount(img, -2 * s2 * g, minlength=3))


def test_fixed_and_unity_have_no_free_parameters():
    obs, _ = _rot_obs()
    obs = replace(obs, partiality_stored=jnp.asarray(np.linspace(0.1, 1.0, obs.size)))
    for m in (FixedPartiality(), UnityPartiality()):
        p = m.init_params(obs)
        assert jax.tree_util.tree_leaves(p) == []
        assert jax.tree_util.tree_leaves(m.free(ScaleSettings(refine_wedge=True))) == []
    np.testing.assert_array_equal(np.asarray(FixedPartiality()({}, obs)),
                                  np.linspace(0.1, 1.0, obs.size))
    np.testing.assert_array_equal(np.asarray(UnityPartiality()({}, obs)), np.ones(obs.size))


def test_bind_and_free_masks():
    """The scaling options and the data specialise a model (``bind``); -w reaches rot only."""
    sc = ScaleSettings(wedge_start_deg=0.2)
    assert FixedPartiality().bind(sc, bandwidth_fwhm=0.01, stills=True) == FixedPartiality()
    assert UnityPartiality().bind(sc, bandwidth_fwhm=0.01, stills=True) == UnityPartiality()
    m = RotationPartiality().bind(sc, bandwidth_fwhm=0.0, stills=False)
    assert isinstance(m, RotationPartiality) and m.refine_wedge and m.wedge_start_deg == 0.2
    assert m.free() == {"global": {"log_mosaicity": True},
                        "image": {"wedge_deg": True, "rot_a": False, "rot_b": False}}
    o = RotationPartiality().bind(ScaleSettings(), bandwidth_fwhm=0.01, stills=True)
    assert o.free()["image"]["rot_a"] and o.free()["image"]["rot_b"]
    assert o.bandwidth_fwhm == 0.01 and not o.refine_wedge
    assert RotationPartiality().free(ScaleSettings())["image"]["wedge_deg"] is False
    assert ImageScale().free() == {"global": {}, "image": {"lnG": True, "B": False}}
    assert ImageScale().free(ScaleSettings(refine_bfactor=True))["image"]["B"] is True
    assert (FixedPartiality().label, RotationPartiality().label) == ("fixed", "rot")
    with pytest.raises(ValueError, match="partiality.mosaicity_deg must be > 0"):
        RotationPartiality(mosaicity_deg=0)
    with pytest.raises(ValueError, match="likelihood.k must be > 0"):
        HuberLikelihood(k=-1)


def test_auto_partiality_rule():
    """-P auto (the default): rot with the stills terms for stills, fixed for rotation runs,
    rot for rotation runs with -w; rot's config keys carry over."""
    auto = AutoPartiality(mosaicity_deg=0.2)
    st = auto.bind(ScaleSettings(), bandwidth_fwhm=0.002, stills=True)
    assert type(st) is RotationPartiality and st.label == "rot"
    assert st.refine_domain and st.refine_orientation and st.bandwidth_fwhm == 0.002
    assert st.mosaicity_deg == 0.2
    assert auto.bind(ScaleSettings(), bandwidth_fwhm=0.0, stills=False) == FixedPartiality()
    w = auto.bind(ScaleSettings(refine_wedge=True), bandwidth_fwhm=0.0, stills=False)
    assert type(w) is RotationPartiality and w.refine_wedge and not w.refine_domain
    assert AutoPartiality.uses_wedge  # -w is accepted with the default


def test_likelihoods():
    m, I, s = jnp.array([1.0, 2.0, 3.0]), jnp.array([1.5, 2.0, 13.0]), jnp.array([0.5, 1.0, 2.0])
    w = jnp.array([1.0, 1.0, 1.0])
    z = np.array([1.0, 0.0, 5.0])
    np.testing.assert_allclose(np.asarray(NormalLikelihood().residuals(m, I, s, w)), z)
    assert float(NormalLikelihood().nll(m, I, s, w)) == pytest.approx(0.5 * np.sum(z**2))
    hub = HuberLikelihood(k=3.0)
    assert float(hub.nll(m, I, s, w)) == pytest.approx(0.5 + 0 + 3 * 5 - 4.5)
    np.testing.assert_allclose(np.asarray(hub.irls_weights(jnp.asarray(z))), [1, 1, 0.6])
    st = StudentTLikelihood(nu=4.0)
    assert float(st.nll(m, I, s, w)) == pytest.approx(np.sum(2.5 * np.log1p(z**2 / 4)))
    np.testing.assert_allclose(np.asarray(st.irls_weights(jnp.asarray(z))), 5 / (4 + z**2))
    # IRLS weights are the stationarity weights: d nll/dz = w(z)·z
    for lk in (hub, st):
        g = jax.grad(lambda mm, lk=lk: lk.nll(mm, I, s, w))(m)
        np.testing.assert_allclose(np.asarray(g), -np.asarray(lk.irls_weights(jnp.asarray(z)))
                                   * z / np.asarray(s), rtol=1e-12)


def test_rotation_slivers_below_the_recorded_fraction_are_left_out():
    """scale.min_recorded_fraction applies to rotation rows only (stills keep their own
    Ewald-offset partiality under min_partiality)."""
    part = np.array([0.05, 0.3, 0.5, 0.05, 0.3, 0.5])
    rot = np.array([True, True, True, False, False, False])
    table = {
        "image": np.array([0, 1, 2, 3, 4, 5]), "d": np.full(6, 2.0), "partiality": part,
        "lp": np.ones(6), "int_sum": np.full(6, 100.0), "int_sum_var": np.full(6, 100.0),
        "flags": np.full(6, 8 | 16, np.uint32),
        "predicted_phi": np.where(rot, 0.3, np.nan), "zeta": np.where(rot, 0.5, np.nan),
        "ewald_offset": np.where(rot, np.nan, 0.0),
    }
    for cut, want in ((0.4, [False, False, True, True, True, True]),
                      (0.0, [True] * 6)):
        obs = observations_from_table(table, refl_id=np.arange(6), wavelength_A=1.0,
                                      phi_increment_deg=0.1, min_partiality=0.02,
                                      min_recorded_fraction=cut)
        np.testing.assert_array_equal(np.asarray(obs.valid)[:6], want)


def test_observations_from_table():
    n = 6
    table = {
        "image": np.array([3, 3, 5, 5, 7, 7]), "d": np.array([2.0, 2.5, 3.0, 1.0, 2.0, 4.0]),
        "partiality": np.array([1.0, 0.9, 0.01, 1.0, 1.0, 1.0]),
        "lp": np.array([2.0, 1.0, 1.0, 1.0, 0.5, 1.0]),
        "int_sum": np.array([100.0, 50.0, 20.0, 10.0, 40.0, 30.0]),
        "int_sum_var": np.array([100.0, 50.0, 20.0, 10.0, 40.0, -1.0]),
        "int_prf": np.array([110.0, np.nan, 20.0, 10.0, 44.0, 30.0]),
        "int_prf_var": np.array([121.0, np.nan, 20.0, 10.0, 36.0, np.nan]),
        "flags": np.full(n, 8 | 16, np.uint32),
        "predicted_phi": np.array([0.35, 0.45, 0.55, 0.6, 0.7, 0.8]),
        "zeta": np.array([0.5, -0.7, 0.5, 0.5, 0.5, 0.5]),
        "ewald_offset": np.full(n, np.nan),
        "image_first": np.array([3, 2, 5, 5, 6, 7]), "image_last": np.array([4, 4, 5, 5, 7, 7]),
    }
    obs = observations_from_table(table, refl_id=np.array([0, 1, 2, 3, 4, 0]),
                                  wavelength_A=1.0, phi_start_deg=0.0, phi_increment_deg=0.1,
                                  min_partiality=0.02, d_min_A=1.5)
    assert obs.size == 64 and obs.n_img == 3 and obs.n_refl == 5
    v = np.asarray(obs.valid)[:n]
    np.testing.assert_array_equal(v, [True, True, False, False, True, False])
    np.testing.assert_allclose(np.asarray(obs.intensity)[[0, 1, 4]], [55.0, 50.0, 88.0])
    np.testing.assert_allclose(np.asarray(obs.sigma)[[0, 1, 4]], [5.5, np.sqrt(50.0), 12.0])
    np.testing.assert_array_equal(np.asarray(obs.image)[[0, 1, 4]], [0, 0, 2])
    np.testing.assert_allclose(np.asarray(obs.frames)[[0, 1, 4]], [2, 3, 2])
    np.testing.assert_allclose(np.asarray(obs.phi_lo_rad)[[0, 1]], np.radians([0.3, 0.2]))
    np.testing.assert_allclose(np.asarray(obs.phi_hi_rad)[[0, 1]], np.radians([0.5, 0.5]))
    np.testing.assert_allclose(np.asarray(obs.s2)[0], 1 / 16)
    assert not np.asarray(obs.valid)[n:].any()
    # sum intensities ignore prf
    o2 = observations_from_table(table, refl_id=np.arange(n), wavelength_A=1.0,
                                 phi_increment_deg=0.1, intensity="sum")
    np.testing.assert_allclose(np.asarray(o2.intensity)[0], 50.0)
    # stills: eps and 2θ from d and λ
    t3 = dict(table, zeta=np.full(n, np.nan), ewald_offset=np.full(n, 1e-3),
              predicted_phi=np.full(n, np.nan))
    o3 = observations_from_table(t3, refl_id=np.arange(n), wavelength_A=1.0)
    assert bool(np.asarray(o3.is_still)[0]) and bool(np.asarray(o3.valid)[0])
    np.testing.assert_allclose(np.asarray(o3.eps_invA)[0], 1e-3)
    # a rotation row (finite φ) whose ζ is NaN is unusable
    t4 = dict(table, zeta=np.where(np.arange(n) == 0, np.nan, table["zeta"]))
    o4 = observations_from_table(t4, refl_id=np.arange(n), wavelength_A=1.0,
                                 phi_increment_deg=0.1)
    assert not bool(np.asarray(o4.valid)[0]) and bool(np.asarray(o4.valid)[1])
    np.testing.assert_allclose(np.asarray(o3.two_theta_rad)[0], 2 * np.arcsin(0.25))
    with pytest.raises(ValueError):
        observations_from_table(table, refl_id=np.arange(3), wavelength_A=1.0)
