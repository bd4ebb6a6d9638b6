"""Sensor physics (detection efficiency, parallax), polarisation from the file's plane and the
Lorentz factor, against analytic values, NIST and the simulator's truth."""

from __future__ import annotations

from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jfx.io.nxmx.geometry import read_beam
from jfx.models.geometry import Beam, Detector
from jfx.physics import detector as sd
from jfx.physics.corrections import lorentz_rotation, polarization_factor
from jfx.physics.diffraction import lab_to_pixel, pixel_s1

HC = 12.398419843320026


def _geom(parallax: bool, material: str = "Si", thickness: float = 0.32):
    beam = Beam.create(1.0)  # 12.398 keV
    det = Detector.create(80.0, (500.0, 400.0), (1000, 1000), sensor_material=material,
                          sensor_thickness_mm=thickness, parallax=parallax)
    return beam, det


def _ray(theta_deg: float, azimuth_deg: float = 30.0) -> np.ndarray:
    t, a = np.radians(theta_deg), np.radians(azimuth_deg)
    return np.array([np.sin(t) * np.cos(a), np.sin(t) * np.sin(a), np.cos(t)])


def test_silicon_attenuation_matches_nist():
    # NIST X-ray mass attenuation coefficients (Hubbell & Seltzer, NISTIR 5632), Si:
    # μ/ρ = 33.89 cm²/g at 10 keV, 10.34 at 15 keV, 4.464 at 20 keV; ρ = 2.33 g/cm³.
    for e_kev, mu_rho in ((10.0, 33.89), (15.0, 10.34), (20.0, 4.464)):
        mu = float(sd.attenuation_per_mm("Si", e_kev))
        assert mu == pytest.approx(mu_rho * 2.33 * 0.1, rel=0.01)
    # 12.4 keV: NIST log–log between its 10 and 15 keV entries gives 18.05 cm²/g
    nist = 33.89 * (12.398 / 10.0) ** (np.log(10.34 / 33.89) / np.log(1.5)) * 2.33 * 0.1
    assert float(sd.attenuation_per_mm("silicon", 12.398)) == pytest.approx(nist, rel=0.02)
    # an absorption edge is a step up: Ge K edge at 11.103 keV
    assert float(sd.attenuation_per_mm("Ge", 11.11)) > 5 * float(sd.attenuation_per_mm("Ge", 11.09))
    assert sd.sensor_material("Unobtainium") is None
    with pytest.raises(KeyError):
        sd.attenuation_per_mm("Unobtainium", 12.0)


def test_detection_efficiency_normal_incidence_and_angle_dependence():
    beam, det = _geom(False)
    mu = float(sd.attenuation_per_mm("Si", HC / 1.0))
    qe0 = float(sd.detection_efficiency(det, beam, jnp.asarray(_ray(0.0))))
    assert qe0 == pytest.approx(1.0 - np.exp(-mu * 0.32), rel=1e-12)
    assert 0.7 < qe0 < 0.8  # 320 µm Si at 12.4 keV
    for theta in (10.0, 30.0, 50.0):
        qe = float(sd.detection_efficiency(det, beam, jnp.asarray(_ray(theta, 75.0))))
        # transmission (1 − QE) = (1 − QE₀)^(1/cos θ_in)
        assert qe == pytest.approx(1.0 - (1.0 - qe0) ** (1.0 / np.cos(np.radians(theta))),
                                   rel=1e-12)
    # a thick CdTe sensor absorbs essentially everything at 12.4 keV
    b2, d2 = _geom(False, "CdTe", 1.0)
    assert float(sd.detection_efficiency(d2, b2, jnp.asarray(_ray(0.0)))) > 0.999


def test_parallax_shift_of_a_tilted_ray():
    beam, det0 = _geom(False)
    _, det1 = _geom(True)
    mu = float(sd.attenuation_per_mm("Si", HC))
    theta, az = 35.0, 20.0
    v = jnp.asarray(_ray(theta, az))
    x0, y0 = (float(a) for a in lab_to_pixel(det0, beam, v))
    x1, y1 = (float(a) for a in lab_to_pixel(det1, beam, v))
    # independent: centroid of the absorbed photons along the path, by quadrature of
    # l · μ e^{−μ l} over l ∈ [0, t/cos θ]
    L = 0.32 / np.cos(np.radians(theta))
    ll = np.linspace(0.0, L, 200001)
    w = mu * np.exp(-mu * ll)
    mean_l = np.trapezoid(ll * w, ll) / np.trapezoid(w, ll)
    shift_mm = mean_l * np.sin(np.radians(theta))  # in-plane part of the path
    assert np.hypot(x1 - x0, y1 - y0) * 0.075 == pytest.approx(shift_mm, rel=1e-6)
    # outwards along the ray's in-plane direction
    assert np.degrees(np.arctan2(y1 - y0, x1 - x0)) == pytest.approx(az, abs=1e-9)
    assert 0.5 < np.hypot(x1 - x0, y1 - y0) < 2.0  # ~1 px: worth correcting
    # pixel_s1 undoes the shift
    s = np.asarray(pixel_s1(det1, beam, x1, y1))
    np.testing.assert_allclose(s / np.linalg.norm(s), _ray(theta, az), atol=1e-12)
    # at normal incidence nothing moves
    n = jnp.asarray(_ray(0.0))
    assert float(lab_to_pixel(det1, beam, n)[0]) == pytest.approx(
        float(lab_to_pixel(det0, beam, n)[0]), abs=1e-12)


def test_gradients_are_finite():
    _, det = _geom(True)
    v = jnp.asarray(_ray(25.0, 40.0))

    def f(dist, lam):
        d = Detector(distance_mm=dist, beam_center_px=det.beam_center_px,
                     fast_axis=det.fast_axis, slow_axis=det.slow_axis,
                     pixel_size_mm=det.pixel_size_mm, shape=det.shape, parallax=True)
        b = Beam.create(1.0)
        b = Beam(wavelength_A=lam, direction=b.direction, bandwidth_fwhm=b.bandwidth_fwhm,
                 polarization_fraction=b.polarization_fraction,
                 polarization_axis=b.polarization_axis)
        x, y = lab_to_pixel(d, b, v)
        return x + y + sd.detection_efficiency(d, b, v)

    g = jax.grad(f, argnums=(0, 1))(jnp.float64(80.0), jnp.float64(1.0))
    assert all(np.isfinite(float(a)) and float(a) != 0.0 for a in g)
    assert jnp.asarray(g[0]).dtype == jnp.float64


def _write_beam(path: Path, stokes) -> None:
    with h5py.File(path, "w") as f:
        f.create_group("beam").create_dataset("incident_polarization_stokes",
                                              data=np.asarray(stokes, float))


def test_polarisation_from_the_file_plane_follows_kahn(tmp_path):
    # Stokes (S0, S1, S2, S3) = (1, 0, 0.98, 0): 99 % of the intensity with E at 45°
    p = tmp_path / "beam.h5"
    _write_beam(p, (1.0, 0.0, 0.98, 0.0))
    with h5py.File(p) as f:
        info = read_beam(f["beam"], 1.0, p)
    beam = info.beam
    assert float(beam.polarization_fraction) == pytest.approx(0.99)
    # Kahn et al. (1982): P = ½(1 + cos²2θ) − ½ τ cos 2ψ sin²2θ, τ = 2p − 1, ψ the azimuth of
    # the scattered ray from the E-field plane (here at 45°)
    for two_theta, az in ((30.0, 45.0), (30.0, 135.0), (50.0, 80.0), (10.0, 0.0)):
        s1 = jnp.asarray(_ray(two_theta, az))
        c2 = np.cos(np.radians(two_theta)) ** 2
        kahn = 0.5 * (1 + c2) - 0.5 * 0.98 * np.cos(2 * np.radians(az - 45.0)) * (1 - c2)
        assert float(polarization_factor(beam, s1)) == pytest.approx(kahn, rel=1e-12)


def test_lorentz_factor_of_rotation():
    # equatorial reflection (axis ⊥ the scattering plane): L = 1/sin 2θ; in general
    # L = 1/(|ζ| sin 2θ) with ζ the cosine of the angle between the axis and the plane normal
    s0 = jnp.asarray([0.0, 0.0, 1.0])
    axis = jnp.asarray([1.0, 0.0, 0.0])
    for tt in (10.0, 40.0):
        s1 = jnp.asarray(_ray(tt, 90.0))  # scattering plane y–z, normal along x
        assert float(lorentz_rotation(axis, s0, s1)) == pytest.approx(
            1.0 / np.sin(np.radians(tt)), rel=1e-12)
    s1 = jnp.asarray(_ray(30.0, 60.0))  # plane normal (sin 60°, −cos 60°, 0): ζ = sin 60°
    assert float(lorentz_rotation(axis, s0, s1)) == pytest.approx(
        1.0 / (np.sin(np.radians(60.0)) * np.sin(np.radians(30.0))), rel=1e-12)


@pytest.mark.parametrize("overrides, refused", [
    ((), True),
    (("integrate.detector_efficiency=false",), True),
    (("integrate.detector_efficiency=false", "integrate.parallax=false"), False),
])
def test_unknown_sensor_material_is_refused_unless_both_corrections_are_off(overrides, refused):
    from jfx.config import compose, process_settings
    from jfx.io.errors import InputError
    from jfx.models.geometry import Geometry
    from jfx.pipeline.run import _sensor_physics

    settings = process_settings(compose("process", list(overrides)))
    beam, det = _geom(False, "Unobtainium")
    g = Geometry(beam=beam, detector=det)
    if refused:
        with pytest.raises(InputError, match="integrate.parallax=false"):
            _sensor_physics(g, settings)
    else:
        assert _sensor_physics(g, settings).detector.parallax is False
    # a known material: the parallax switch reaches the detector
    beam, det = _geom(False, "Si")
    on = _sensor_physics(Geometry(beam=beam, detector=det), settings).detector.parallax
    assert on is ("integrate.parallax=false" not in overrides)
