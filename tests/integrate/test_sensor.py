"""Integration with the sensor corrections on simulated frames: the simulator records QE of
each reflection's photons and places its spot at the mean absorption depth; prediction with the
same physics finds the spots there and, divided by ``qe``, the integrated intensities no longer
depend on the angle of incidence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jfx.integrate.predict import predict_still
from jfx.integrate.settings import SummationIntegratorSettings
from jfx.sim import simulate
from tests.sim.conftest import tiny_preset


@pytest.fixture(scope="module")
def thin_sensor_still():
    # a thin sensor close to the sample: QE = 1 − exp(−μt/cos θ_in) rises by ~10 % from the
    # centre to the corner (2θ up to ~28°), a large, angle-dependent effect
    exp = simulate.build_experiment(tiny_preset(
        kind="still", n_images=2, osc_deg=0.0, mosaicity_deg=0.3, bandwidth_fwhm=0.01,
        blank_fraction=0.0, min_fraction=1e-6, distance_mm=20.0, d_min_A=1.8,
        sensor_thickness_mm=0.05, mean_photons=3000.0))
    return exp, simulate.plan_observations(exp)


def _integrate(exp, obs, parallax: bool):
    geom = dataclasses.replace(exp.geometry, detector=dataclasses.replace(
        exp.geometry.detector, parallax=parallax))
    integ = SummationIntegratorSettings(radii_px=(4.0, 6.0, 8.0), profile=False).create(
        None, None, None)
    out = []
    for i, fr in enumerate(simulate.iter_frames(exp, obs)):
        p = exp.preset
        pr = predict_still(geom, exp.bases[i], p.d_min_A, mosaicity_deg=p.mosaicity_deg,
                           bandwidth_fwhm=p.bandwidth_fwhm, n_sigma=3.0)
        res, _, _ = integ.begin(np.asarray(fr), pr.x_px, pr.y_px, pr.d_A)
        sel = obs["image"] == i
        truth = {tuple(h): (e, x, y) for h, e, x, y in zip(obs["hkl"][sel], obs["i_true"][sel],
                                                            obs["x"][sel], obs["y"][sel])}
        for j, h in enumerate(pr.hkl):
            t = truth.get(tuple(h))
            if t is None or not (8 <= pr.x_px[j] <= 191 and 8 <= pr.y_px[j] <= 191):
                continue
            out.append((res.intensity[j], pr.polarization[j] * pr.partiality[j], pr.qe[j],
                        t[0], pr.x_px[j] - t[1], pr.y_px[j] - t[2]))
    return np.array(out, np.float64)


def test_qe_corrected_intensities_do_not_depend_on_the_angle_of_incidence(thin_sensor_still):
    exp, obs = thin_sensor_still
    a = _integrate(exp, obs, parallax=True)
    isum, lp, qe, itrue, dx, dy = a.T
    # the predicted positions are the simulator's (its spots lie at the absorption depth)
    assert np.max(np.hypot(dx, dy)) < 1e-6
    strong = (itrue > 0) & (isum > 200)
    assert strong.sum() > 30
    assert qe[strong].max() / qe[strong].min() > 1.05  # the effect is there to be corrected
    inv_cos = np.log(1.0 - qe) / np.log(1.0 - qe.min())  # ∝ 1/cos θ_in
    raw = isum / (lp * itrue)
    corrected = raw / qe
    # slope of log(I / I_true) against 1/cos θ_in: the raw intensities follow QE's law; the
    # corrected ones are flat but for ~1 % (background annuli pick up neighbours' tails)
    s_raw = np.polyfit(inv_cos[strong], np.log(raw[strong]), 1)[0]
    s_cor = np.polyfit(inv_cos[strong], np.log(corrected[strong]), 1)[0]
    s_qe = np.polyfit(inv_cos[strong], np.log(qe[strong]), 1)[0]
    assert s_raw == pytest.approx(s_qe, rel=0.3) and s_raw > 0.5
    assert abs(s_cor) < 0.2 * s_raw, (s_raw, s_cor)
    # after the correction every strong reflection is the same multiple of its truth (the
    # simulator's scale; noise-free frames, r1 = 4 px holds the whole spot)
    ratio = corrected[strong] / float(exp.params.scale)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(ratio, 1.0, rtol=0.04)


def test_without_parallax_the_prediction_misses_the_spots(thin_sensor_still):
    exp, obs = thin_sensor_still
    a = _integrate(exp, obs, parallax=False)
    shift = np.hypot(a[:, 4], a[:, 5])
    # 50 µm Si absorbs evenly through its depth: ⟨l⟩ ≈ t/(2 cos θ_in), in-plane ⟨l⟩ sin θ_in
    assert 0.05 < np.max(shift) < 0.25
