"""The physical scale model (issue 17 item 2): spherical harmonics against scipy, the
crystal-frame beam directions against the diffraction geometry, and recovery of a known
smooth scale, absorption surface and per-image jitter from synthetic observations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import special

from jfx.models.geometry import Beam, Detector
from jfx.physics.diffraction import lab_to_pixel, rotation_diffraction_angles
from jfx.physics.rotation import axis_rotation
from jfx.scale.fit import fit_scales
from jfx.scale.harmonics import n_harmonics, real_harmonics
from jfx.scale.models import AutoScale, ImageScale, PhysicalScale, restrained_tau
from jfx.physics.rotation import LabFrame
from jfx.scale.observations import make_observations
from jfx.scale.partiality import UnityPartiality
from jfx.scale.settings import ScaleSettings


def test_real_harmonics_are_scipys_orthonormal_real_harmonics():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(200, 3)) * 3.0  # not normalised: the direction counts
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    theta, phi = np.arccos(u[:, 2]), np.arctan2(u[:, 1], u[:, 0])
    ref = []
    for l in range(7):
        for m in range(-l, l + 1):
            # scipy's complex Y_l^|m| carries the Condon-Shortley phase (−1)^m
            c = (-1) ** abs(m) * special.sph_harm_y(l, abs(m), theta, phi)
            ref.append(c.real if m == 0 else np.sqrt(2) * (c.real if m > 0 else c.imag))
    Y = np.asarray(real_harmonics(v, 6, skip_l0=False))
    np.testing.assert_allclose(Y, np.stack(ref, 1), atol=1e-12)
    assert np.asarray(real_harmonics(v, 4)).shape == (200, n_harmonics(4)) == (200, 24)
    np.testing.assert_array_equal(np.asarray(real_harmonics(np.zeros((2, 3)), 3)), 0.0)


def test_crystal_frame_directions_add_up_to_the_reciprocal_vector():
    """s1 − s0 = R(φ) q0 at the diffraction angle: the crystal-frame directions from a
    predicted pixel and φ must give (ŝ1_c − ŝ0_c)/λ = q0 (with −ŝ0_c stored)."""
    lam = 1.2
    det = Detector.create(distance_mm=120.0, beam_center_px=(510.3, 530.7), shape=(1064, 1030),
                          fast_axis=(-1.0, 0.0, 0.0), slow_axis=(0.0, -1.0, 0.0))
    beam = Beam.create(lam)
    axis = np.array([1.0, 0.0, 0.0])
    rng = np.random.default_rng(3)
    q0 = rng.normal(size=(40, 3)) * 0.12
    s0 = np.array([0.0, 0.0, 1.0 / lam])
    phi = np.asarray(rotation_diffraction_angles(s0, axis, q0))[:, 0]
    keep = np.isfinite(phi)
    q0, phi = q0[keep], phi[keep]
    s1 = s0 + np.einsum("nij,nj->ni", axis_rotation(axis, phi), q0)
    xy = lab_to_pixel(det, beam, s1)
    x, y = np.asarray(xy[0]), np.asarray(xy[1])
    frame = LabFrame.create(distance_mm=120.0, beam_center_px=(510.3, 530.7),
                            fast=(-1, 0, 0), slow=(0, -1, 0), pixel_mm=(0.075, 0.075),
                            beam=(0, 0, 1), axis=axis)
    s0c, s1c = frame.crystal_directions(x, y, phi)
    np.testing.assert_allclose((s1c + s0c) / lam, q0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(s1c, axis=1), 1.0, atol=1e-12)
    z0, _ = frame.crystal_directions([np.nan], [1.0], [0.0])
    np.testing.assert_array_equal(z0, 0.0)


N_IMG, N_REFL, PER_IMG = 120, 300, 40


def _synthetic(jitter: float, seed: int = 0):
    """A 60° sweep: per-row random diffracted directions, true g = exp(0.1 sin(3φ) + c_i +
    absorption (L = 2 surface)); 1 % noise. Returns (obs, true g, true I, coefficients)."""
    rng = np.random.default_rng(seed)
    n = N_IMG * PER_IMG
    img = np.repeat(np.arange(N_IMG), PER_IMG)
    phi = np.radians(0.5 * img + 0.25)
    refl = rng.integers(0, N_REFL, n)
    I_true = rng.exponential(1000.0, N_REFL) + 50.0
    u = rng.normal(size=(n, 3))
    s1 = u / np.linalg.norm(u, axis=1, keepdims=True)
    s1[:, 2] = np.abs(s1[:, 2])  # forward scattering
    s1 /= np.linalg.norm(s1, axis=1, keepdims=True)
    R = axis_rotation(np.array([1.0, 0.0, 0.0]), phi)
    s0c = np.einsum("nji,j->ni", R, np.array([0.0, 0.0, -1.0]))
    s1c = np.einsum("nji,nj->ni", R, s1)
    coef = np.zeros(8)
    coef[[1, 3, 5, 6]] = (0.15, -0.1, 0.12, 0.08)
    Y = 0.5 * (np.asarray(real_harmonics(s0c, 2)) + np.asarray(real_harmonics(s1c, 2)))
    c_img = rng.normal(0.0, jitter, N_IMG) if jitter else np.zeros(N_IMG)
    g = np.exp(0.1 * np.sin(3 * phi) + c_img[img] + Y @ coef)
    mean = g * I_true[refl]
    sig = 0.01 * mean + 2.0
    cols = {"refl": refl, "image": img, "intensity": mean + rng.normal(0, 1, n) * sig,
            "sigma": sig, "d_A": np.full(n, 3.0), "phi_c_rad": phi, "zeta": np.ones(n),
            **{f"s0c_{c}": s0c[:, i] for i, c in enumerate("xyz")},
            **{f"s1c_{c}": s1c[:, i] for i, c in enumerate("xyz")}}
    obs = make_observations(cols, n_refl=N_REFL, n_img=N_IMG, wavelength_A=1.0,
                            phi_increment_rad=np.radians(0.5))
    return obs, g, I_true, c_img


def _fit(model, obs, cycles: int = 3):
    params, fit = None, None
    for _ in range(cycles):
        fit = fit_scales(obs, UnityPartiality(), model, params0=params, iterations=1,
                         error_model0=None if fit is None else fit.error_model)
        params = fit.params
        params = {**params, "scale": model.update_hyperparameters(params["scale"], fit, obs)}
    return fit, params


def _rel_rms(fit, g, n):
    """rms of the fitted / true g per row after the common factor."""
    r = np.log(fit.obs_scale[:n]) - np.log(g)
    return float(np.std(r))


@pytest.fixture(scope="module")
def smooth_set():
    return _synthetic(0.0)


def test_physical_model_recovers_smooth_scale_and_absorption(smooth_set):
    obs, g, I_true, _ = smooth_set
    n = g.size
    phys = PhysicalScale(absorption_lmax=2, absorption_min_range_deg=30).bind(ScaleSettings(),
                                                                           obs)
    fit, params = _fit(phys, obs)
    assert _rel_rms(fit, g, n) < 0.004  # per-row scale within 0.4 % of the truth
    ok = np.isfinite(fit.intensity)
    assert np.corrcoef(fit.intensity[ok], I_true[ok])[0, 1] > 0.9999
    # the per-image model cannot follow a surface that differs between rows of one image
    img_fit, _ = _fit(ImageScale().bind(ScaleSettings(), obs), obs, cycles=1)
    assert _rel_rms(img_fit, g, n) > 3 * _rel_rms(fit, g, n)
    # with L = 0 the surface is gone and the rows are off by the absorption
    flat = PhysicalScale(absorption_lmax=0, absorption_min_range_deg=30).bind(ScaleSettings(),
                                                                           obs)
    flat_fit, _ = _fit(flat, obs, cycles=1)
    assert _rel_rms(flat_fit, g, n) > 0.03


def test_restrained_image_scales_find_the_jitter_and_only_the_jitter(smooth_set):
    """τ of the per-image deviations: about the true 3 % jitter when there is one, near 0
    (the images' sampling error is ≈ 0.2 %) when the scale is smooth."""
    model = AutoScale(absorption_lmax=2, absorption_min_range_deg=30).bind(ScaleSettings(),
                                                                           smooth_set[0])
    assert isinstance(model, PhysicalScale) and model.image_scale == "restrained"
    _, params = _fit(model, smooth_set[0], cycles=4)
    assert float(np.exp(params["scale"]["global"]["log_tau"])) < 0.003
    obs, g, _, c_img = _synthetic(0.03, seed=1)
    fit, params = _fit(model, obs, cycles=4)
    tau = float(np.exp(params["scale"]["global"]["log_tau"]))
    assert 0.02 < tau < 0.04, tau
    assert _rel_rms(fit, g, g.size) < 0.006


def test_restrained_tau_is_the_hierarchical_maximum_likelihood():
    rng = np.random.default_rng(5)
    v = rng.uniform(0.5, 2.0, 20000) * 1e-4
    x = rng.normal(0, np.sqrt(0.02**2 + v))
    assert restrained_tau(x, v, 1e-4) == pytest.approx(0.02, rel=0.05)
    x0 = rng.normal(0, np.sqrt(v))  # no deviations beyond the sampling error
    assert restrained_tau(x0, v, 0.05) < 0.003


def test_auto_scale_is_the_image_model_for_stills(smooth_set):
    obs = dataclasses.replace(smooth_set[0], is_still=smooth_set[0].valid)
    m = AutoScale().bind(ScaleSettings(refine_bfactor=True), obs)
    assert m == ImageScale(refine_bfactor=True)
    with pytest.raises(ValueError, match="models rotation sweeps"):
        PhysicalScale().bind(ScaleSettings(), obs)


def test_short_sweeps_get_no_absorption_surface(smooth_set):
    """dials.scale's rule: no absorption surface for a run under 60° (the synthetic sweep
    spans 59.5°); the surface's rows then carry no absorption term."""
    obs = smooth_set[0]
    m = PhysicalScale().bind(ScaleSettings(), obs)
    assert m.absorbing_runs == (False,) and not m.free()["global"]["absorption"]
    params = m.init_params(obs)
    params["global"]["absorption"] = params["global"]["absorption"] + 0.3
    np.testing.assert_array_equal(np.asarray(m.absorption(params, obs)), 0.0)
    assert "no absorption surface" in m.summary(params, obs)
