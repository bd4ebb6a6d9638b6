"""Azimuthal integration (jfx.azint) against analytic results and a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.azint.integrator import AzimuthalIntegrator, pixel_correction
from jfx.azint.settings import AzintSettings
from jfx.models.geometry import Beam, Detector, Geometry

SHAPE = (40, 52)


def geometry(distance_mm: float = 40.0, bc=(20.3, 17.6), wavelength_A: float = 1.0,
             fast=(1.0, 0.0, 0.0), slow=(0.0, 1.0, 0.0)) -> Geometry:
    return Geometry(Beam.create(wavelength_A, polarization_fraction=0.95),
                    Detector.create(distance_mm, bc, SHAPE, pixel_size_mm=0.3, fast_axis=fast,
                                    slow_axis=slow), None)


def numpy_reference(frames, geo, mask, settings, err=None, sat=None):
    """Independent expectation: explicit per-pixel geometry + np.bincount."""
    det, beam = geo.detector, geo.beam
    ny, nx = det.shape
    px, py = det.pixel_size_mm
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    f = np.asarray(det.fast_axis)
    s = np.asarray(det.slow_axis)
    b = np.asarray(beam.direction)
    bx, by = np.asarray(det.beam_center_px)
    D = float(det.distance_mm)
    pos = D * b + ((x - bx) * px)[..., None] * f + ((y - by) * py)[..., None] * s
    r = np.linalg.norm(pos, axis=-1)
    two_theta = np.arccos(pos @ b / r)
    lam = float(beam.wavelength_A)
    q = 4 * np.pi * np.sin(two_theta / 2) / lam
    n = np.cross(f, s)
    perp = abs(np.dot(D * b - bx * px * f - by * py * s, n))
    omega = (perp / r) ** 3 if settings.solid_angle else 1.0
    if settings.polarization:
        u = pos / r[..., None]
        e = np.asarray(beam.polarization_axis)
        nn = np.cross(b, e)
        p = float(beam.polarization_fraction)
        pol = p * (1 - (u @ e) ** 2) + (1 - p) * (1 - (u @ nn) ** 2)
    else:
        pol = 1.0
    high = settings.high_q_invA or q.max()
    nb = int(np.ceil((high - settings.low_q_invA) / settings.q_spacing_invA - 1e-9))
    qb = np.minimum(np.floor((q - settings.low_q_invA) / settings.q_spacing_invA), nb - 1)
    ok = (q >= settings.low_q_invA) & (q <= high) & ~mask
    out = []
    for fr in frames:
        v = ok & (fr != err if err is not None else True) & (fr < sat if sat is not None else True)
        w = (fr / (omega * pol))[v]
        idx = qb[v].astype(int)
        sm = np.bincount(idx, w, nb)
        ct = np.bincount(idx, None, nb)
        with np.errstate(invalid="ignore"):
            out.append(np.where(ct > 0, sm / np.maximum(ct, 1), np.nan))
    return np.array(out), settings.low_q_invA + (np.arange(nb) + 0.5) * settings.q_spacing_invA


def test_flat_field_is_flat_after_corrections():
    geo = geometry()
    st = AzintSettings(q_spacing_invA=0.05)
    mask = np.zeros(SHAPE, bool)
    mask[:, 7] = True
    integ = AzimuthalIntegrator.create(st, geo, mask)
    rel = pixel_correction(geo)  # Ω_rel · P
    assert rel.max() <= 1.0 + 1e-12 and rel.min() > 0.5
    f = 1000.0
    frames = np.rint(f * rel)[None].astype(np.int32)
    frames[0, :, 7] = 10 ** 6  # masked column must not count
    res = integ.integrate(frames)
    prof = res.profile[0]
    filled = ~np.isnan(prof)
    assert filled.sum() >= 10
    # rounding to integer counts: |error| <= 0.5 / min(rel) per pixel
    np.testing.assert_allclose(prof[filled], f, atol=0.5 / rel.min() + 1e-3)
    # without corrections the same frame is NOT flat (the test can fail)
    raw = AzimuthalIntegrator.create(AzintSettings(q_spacing_invA=0.05, solid_angle=False,
                                                   polarization=False), geo, mask)
    p2 = raw.integrate(frames).profile[0]
    assert np.nanmax(np.abs(p2 - f)) > 20


def test_bin_centres_and_edge_default():
    geo = geometry()
    st = AzintSettings(q_spacing_invA=0.02, low_q_invA=0.1)
    integ = AzimuthalIntegrator.create(st, geo, None)
    _, qexp = numpy_reference(np.zeros((1,) + SHAPE), geo, np.zeros(SHAPE, bool), st)
    np.testing.assert_allclose(integ.bin_to_q, qexp)
    np.testing.assert_allclose(np.diff(integ.bin_to_q), 0.02)
    assert integ.bin_to_q[0] == pytest.approx(0.11)
    counts = integ.static_count
    assert counts[-1] >= 1 and counts.sum() == np.sum(integ.bin_index < integ.n_total)


@pytest.mark.parametrize("dtype,err,sat", [("int32", -(2 ** 31), 900), ("uint16", 65535, None),
                                           ("int16", None, None)])
def test_matches_numpy_bincount(dtype, err, sat):
    rng = np.random.default_rng(3)
    geo = geometry(distance_mm=30.0, bc=(-5.5, 12.0), fast=(-1.0, 0.0, 0.0))
    st = AzintSettings(q_spacing_invA=0.03, low_q_invA=0.05, high_q_invA=1.2)
    mask = rng.random(SHAPE) < 0.05
    frames = rng.poisson(20.0, (3,) + SHAPE).astype(dtype)
    if err is not None:
        frames[0, 5, 5:30] = err
    if sat is not None:
        frames[1, 10, 10:20] = sat + 5
    integ = AzimuthalIntegrator.create(st, geo, mask, error_value=err, saturation_value=sat)
    res = integ.integrate(frames)
    exp, qexp = numpy_reference(frames.astype(np.float64), geo, mask, st, err, sat)
    np.testing.assert_allclose(integ.bin_to_q, qexp)
    assert res.profile.dtype == np.float32 and res.profile.shape == exp.shape
    np.testing.assert_array_equal(np.isnan(res.profile), np.isnan(exp))
    np.testing.assert_allclose(res.profile, exp, rtol=2e-5, equal_nan=True)
    assert res.profile_2d is None


def test_2d_consistent_with_1d():
    rng = np.random.default_rng(5)
    geo = geometry()
    mask = rng.random(SHAPE) < 0.1
    st = AzintSettings(q_spacing_invA=0.05, n_azimuthal_bins=8)
    integ = AzimuthalIntegrator.create(st, geo, mask, error_value=-1)
    frames = rng.poisson(7.0, (2,) + SHAPE).astype(np.int32)
    frames[1, 3, :] = -1
    res = integ.integrate(frames)
    assert res.profile_2d.shape == (2, 8, integ.n_bins)
    np.testing.assert_allclose(integ.bin_to_azimuth_deg, 22.5 + 45 * np.arange(8))
    one = AzimuthalIntegrator.create(AzintSettings(q_spacing_invA=0.05), geo, mask,
                                     error_value=-1).integrate(frames)
    np.testing.assert_allclose(res.profile, one.profile, rtol=1e-5, equal_nan=True)
    # the 1D mean is the count-weighted mean of the 2D means
    cnt = integ.static_count.reshape(8, integ.n_bins)
    c = np.broadcast_to(cnt, res.profile_2d.shape).copy()
    c[1] -= np.array([np.bincount(integ.bin_index[(frames[1].ravel() == -1)
                                                  & (integ.bin_index < integ.n_total)],
                                  minlength=integ.n_total)[:integ.n_total]]).reshape(8, -1)
    w = np.nansum(np.nan_to_num(res.profile_2d) * c, axis=1) / c.sum(axis=1)
    np.testing.assert_allclose(w, res.profile, rtol=1e-5, equal_nan=True)
    # an azimuth bin's pixels are in the right sector: pixel at +x (lab) → azimuth ~0°
    assert integ.bin_index.reshape(SHAPE)[18, 51] // integ.n_bins == 0


def test_settings_validation():
    with pytest.raises(ValueError, match="q_spacing_invA"):
        AzintSettings(q_spacing_invA=-0.1)
    with pytest.raises(ValueError, match="high_q_invA"):
        AzintSettings(low_q_invA=2.0, high_q_invA=1.0)
    with pytest.raises(ValueError, match="n_azimuthal_bins"):
        AzintSettings(n_azimuthal_bins=-1)
    with pytest.raises(ValueError, match="no q range"):
        AzimuthalIntegrator.create(AzintSettings(low_q_invA=100.0), geometry(), None)


def test_error_values_only_under_the_mask():
    """Error pixels inside the static mask take the no-second-scatter path: same result."""
    rng = np.random.default_rng(11)
    geo = geometry()
    mask = np.zeros(SHAPE, bool)
    mask[:, 10:12] = True
    st = AzintSettings(q_spacing_invA=0.04)
    frames = rng.poisson(30.0, (2,) + SHAPE).astype(np.int32)
    frames[:, :, 10:12] = -7  # error value, masked anyway
    integ = AzimuthalIntegrator.create(st, geo, mask, error_value=-7)
    res = integ.integrate(frames)
    exp, _ = numpy_reference(frames.astype(np.float64), geo, mask, st, err=-7)
    np.testing.assert_allclose(res.profile, exp, rtol=2e-5, equal_nan=True)
    frames[1, 20, 20] = -7  # one unmasked error pixel: the count path must drop it
    res = integ.integrate(frames)
    exp, _ = numpy_reference(frames.astype(np.float64), geo, mask, st, err=-7)
    np.testing.assert_allclose(res.profile, exp, rtol=2e-5, equal_nan=True)


def test_corrections_match_the_physics_functions():
    """pixel_correction / pixel_q_azimuth agree with jfx.physics at sampled pixels."""
    import jax.numpy as jnp

    from jfx.azint.integrator import pixel_q_azimuth
    from jfx.physics.corrections import polarization_factor
    from jfx.physics.diffraction import pixel_q, pixel_s1, solid_angle

    geo = geometry(distance_mm=25.0, bc=(-3.0, 30.5), fast=(0.0, 1.0, 0.0), slow=(1.0, 0.0, 0.0))
    det, beam = geo.detector, geo.beam
    rel = pixel_correction(geo)
    q, az = pixel_q_azimuth(geo)
    ys, xs = np.array([0, 5, 39, 20, 39]), np.array([0, 51, 0, 25, 51])
    x, y = jnp.asarray(xs, float), jnp.asarray(ys, float)
    om = np.asarray(solid_angle(det, beam, x, y))
    px, py = det.pixel_size_mm
    perp = float(det.distance_mm)  # detector normal along the beam here
    pol = np.asarray(polarization_factor(beam, pixel_s1(det, beam, x, y)))
    np.testing.assert_allclose(rel[ys, xs], om / (px * py / perp**2) * pol, rtol=1e-12)
    qv = np.linalg.norm(np.asarray(pixel_q(det, beam, x, y)), axis=-1)  # |q| = 1/d
    np.testing.assert_allclose(q[ys, xs], 2 * np.pi * qv, rtol=1e-12)
    assert np.all((az >= 0) & (az < 360))


def test_host_and_jax_paths_agree():
    """The numpy run-reduceat path (CPU default) equals the jitted scatter kernel."""
    import jax.numpy as jnp

    from jfx.azint.integrator import AzimuthalIntegrator
    from jfx.azint.settings import AzintSettings
    from jfx.models import Beam, Detector, Geometry

    rng = np.random.default_rng(4)
    shape = (90, 120)
    geom = Geometry(Beam.create(1.0), Detector.create(50.0, (61.3, 40.2), shape))
    mask = np.zeros(shape, bool)
    mask[30:33] = True
    frames = rng.poisson(3.0, (3,) + shape).astype(np.int32)
    frames[:, mask] = -1
    frames[1, 5, 7] = -1          # error value outside the static mask
    frames[2, 50, 60] = 5000      # saturated
    for n_azim in (0, 8):
        integ = AzimuthalIntegrator.create(
            AzintSettings(q_spacing_invA=0.05, n_azimuthal_bins=n_azim), geom, mask,
            error_value=-1, saturation_value=1000)
        host = integ.integrate(frames)
        dev = integ.integrate(jnp.asarray(frames))
        np.testing.assert_allclose(host.profile, dev.profile, rtol=1e-5, equal_nan=True)
        if n_azim:
            np.testing.assert_allclose(host.profile_2d, dev.profile_2d, rtol=1e-5,
                                       equal_nan=True)
        assert np.isfinite(host.profile).sum() > 5


def test_pixel_resolution_map_matches_spot_finder_map():
    """The integrator's d = 2π/q map (handed to the spot finder) equals resolution_map."""
    from jfx.azint.integrator import AzimuthalIntegrator
    from jfx.azint.settings import AzintSettings
    from jfx.models import Beam, Detector, Geometry
    from jfx.spotfind.find import resolution_map

    geom = Geometry(Beam.create(0.9), Detector.create(70.0, (33.0, 21.5), (60, 90),
                                                      fast_axis=(-1, 0, 0), slow_axis=(0, -1, 0)))
    d_ref = resolution_map(geom)
    d = AzimuthalIntegrator.create(AzintSettings(), geom, None).pixel_d_A
    fin = np.isfinite(d_ref)
    np.testing.assert_allclose(d[fin], d_ref[fin], rtol=1e-6)
    np.testing.assert_array_equal(np.isfinite(d), fin)
