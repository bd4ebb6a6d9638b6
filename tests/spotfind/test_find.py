"""The spot-finding stage: centroids, recall/precision on simulated data, filters, ice rings,
max_spots rules, SpotList layout, settings validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial import cKDTree

from jfx.models.geometry import Beam, Detector, Geometry
from jfx.sim import presets, simulate
from jfx.spotfind.find import ThresholdSpotFinder, find_spots, resolution_map
from jfx.spotfind.ice import ICE_RINGS_A, on_ice_ring
from jfx.spotfind.settings import ThresholdSpotFinderSettings as Settings
from jfx.spotfind.stats import image_stats
from tests.sim.conftest import tiny_preset
from tests.spotfind.conftest import render_spots


def _simulate(p):
    exp = simulate.build_experiment(p)
    obs = simulate.plan_observations(exp)
    return exp, obs, np.stack(list(simulate.iter_frames(exp, obs)))


def _finder(exp, **kw):
    return ThresholdSpotFinder.create(Settings(**kw), exp.geometry, exp.layout.pixel_mask != 0,
                                      exp.error_value, exp.saturation_value)


def _match(exp, obs, res, min_photons, radius=1.5, high_res=1.5):
    """Acceptance metric: recall over reflections on valid pixels with ≥ min_photons,
    precision = found spots within ``radius`` of any simulated reflection (≥ 1 photon)."""
    mask = exp.layout.pixel_mask != 0
    ny, nx = mask.shape
    hit = tot = ok = found = 0
    for i in range(res.spots.image.size):
        sel = obs["image"] == i
        x, y, e, d = obs["x"][sel], obs["y"][sel], obs["expected"][sel], obs["d"][sel]
        ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        on_valid = np.zeros(x.size, bool)
        on_valid[inside] = ~mask[iy[inside], ix[inside]]
        tgt = on_valid & (e >= min_photons) & (d >= high_res)
        v = res.spots.valid[i]
        sp = np.c_[res.spots.x_px[i][v], res.spots.y_px[i][v]]
        if sp.shape[0] and tgt.any():
            dist, _ = cKDTree(sp).query(np.c_[x[tgt], y[tgt]])
            hit += int((dist <= radius).sum())
        tot += int(tgt.sum())
        if sp.shape[0]:
            dist, _ = cKDTree(np.c_[x[e >= 1], y[e >= 1]]).query(sp)
            ok += int((dist <= radius).sum())
            found += sp.shape[0]
    return hit / tot, ok / found, tot


def test_noiseless_centroids_within_005px():
    exp, obs, frames = _simulate(tiny_preset(
        kind="still", n_images=3, osc_deg=0.0, mosaicity_deg=0.3, bandwidth_fwhm=0.01,
        min_fraction=1e-6, blank_fraction=0.0, mean_photons=5000.0))
    res = find_spots(frames, np.arange(3), _finder(exp, max_spots=500))
    n_checked = 0
    for i in range(3):
        sel = obs["image"] == i
        x, y, e = obs["x"][sel], obs["y"][sel], obs["expected"][sel]
        nn, _ = cKDTree(np.c_[x, y]).query(np.c_[x, y], k=2)
        # isolated (no other reflection within 12 px), bright, away from the edges
        iso = (nn[:, 1] > 12) & (e >= 500) & (x > 3) & (y > 3) & (x < 196) & (y < 196)
        v = res.spots.valid[i]
        dist, _ = cKDTree(np.c_[res.spots.x_px[i][v], res.spots.y_px[i][v]]).query(
            np.c_[x[iso], y[iso]])
        assert np.all(dist < 0.05), dist
        n_checked += int(iso.sum())
    assert n_checked >= 20


def test_synthetic_spot_centroids_and_intensity():
    rng = np.random.default_rng(4)
    xs = rng.uniform(20, 180, 9)
    ys = np.repeat([30.3, 100.6, 170.2], 3) + rng.uniform(-2, 2, 9)
    xs = np.tile([30.0, 100.0, 170.0], 3) + rng.uniform(-2, 2, 9)
    ns = rng.uniform(300, 5000, 9)
    img = np.rint(render_spots((200, 200), xs, ys, ns, bg=1.0)).astype(np.int32)
    geo = Geometry(beam=Beam.create(1.0), detector=Detector.create(100.0, (100.0, 100.0),
                                                                    (200, 200)))
    f = ThresholdSpotFinder.create(Settings(high_resolution_A=None), geo, None, None, None)
    res = f(img[None], np.array([7]))
    v = res.spots.valid[0]
    assert v.sum() == 9 and res.stats["n_spots_found"][0] == 9
    dist, j = cKDTree(np.c_[res.spots.x_px[0][v], res.spots.y_px[0][v]]).query(np.c_[xs, ys])
    assert np.all(dist < 0.05)
    # background-subtracted intensity of the strong pixels: most of the spot
    frac = res.spots.intensity[0][v][j] / ns
    assert np.all((frac > 0.6) & (frac <= 1.01))
    assert np.all(res.spots.frame[0][v] == 7.5) and res.spots.image[0] == 7


@pytest.fixture(scope="module")
def sim_still():
    base = presets.get_preset("lyso_serial")
    p = dataclasses.replace(base, crop=(384, 384), n_images=6, distance_mm=60.0,
                            blank_fraction=0.0)
    return _simulate(presets.validate(p))


@pytest.fixture(scope="module")
def sim_rotation():
    base = presets.get_preset("lyso_rotation")
    p = dataclasses.replace(base, crop=(384, 384), n_images=3, distance_mm=100.0,
                            mosaicity_deg=0.1)
    return _simulate(presets.validate(p))


def test_recall_precision_still(sim_still):
    exp, obs, frames = sim_still
    # σ = 1 px spots of 50 photons have peak pixels of 7–15 photons: the default threshold
    # of 10 photons misses some of them, so the acceptance set is checked at 5 photons,
    # with min_pixels = 2 against single noise pixels
    res = find_spots(frames, np.arange(len(frames)),
                     _finder(exp, threshold=5.0, min_pixels=2, max_spots=1000))
    recall, precision, n = _match(exp, obs, res, 50.0)
    assert n >= 60
    assert recall >= 0.95 and precision >= 0.9, (recall, precision)


def test_recall_precision_rotation(sim_rotation):
    exp, obs, frames = sim_rotation
    res = find_spots(frames, np.arange(len(frames)), _finder(exp, max_spots=1000))
    recall, precision, n = _match(exp, obs, res, 100.0)
    assert n >= 40
    assert recall >= 0.95 and precision >= 0.9, (recall, precision)
    # per-image statistics: fused values equal image_stats; estimates are sensible
    vmax, mean, n_masked, n_sat = image_stats(frames, exp.layout.pixel_mask != 0,
                                              exp.error_value, exp.saturation_value)
    st = res.stats
    np.testing.assert_array_equal(st["max"], vmax)
    np.testing.assert_array_equal(st["mean"], mean)
    np.testing.assert_array_equal(st["n_masked"], n_masked)
    np.testing.assert_array_equal(st["n_saturated"], n_sat)
    # background estimate ≈ the expected photons (background + spot tails) of the pixels it
    # averages (valid, not strong); Poisson error of a mean over ~1e5 pixels < 0.01
    finder = _finder(exp)
    for i in range(len(frames)):
        strong = finder.strong(frames[i])[0]
        bk = (exp.layout.pixel_mask == 0) & ~strong
        expected = simulate.expected_frame(exp, obs, i)[bk].mean()
        assert abs(st["bkg_estimate"][i] - expected) < 0.01 + 0.02 * expected
    d_obs = obs["d"][obs["expected"] >= 100]
    assert np.all(st["resolution_estimate"] >= d_obs.min() - 0.05)
    assert np.all(st["resolution_estimate"] <= np.median(d_obs))
    assert np.all(st["n_spots"] == res.spots.valid.sum(1))
    assert np.all(st["strong_pixels"] >= st["n_spots"])


def _ring_geometry(shape=(301, 301)):
    bc = ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    return Geometry(beam=Beam.create(1.0), detector=Detector.create(20.0, bc, shape))


def _radius_px(d, geo):
    tth = 2 * np.arcsin(1.0 / (2 * d))
    return float(geo.detector.distance_mm) * np.tan(tth) / 0.075


def _spots_at(geo, ds, phis, ns):
    bx, by = np.asarray(geo.detector.beam_center_px)
    r = np.array([_radius_px(d, geo) for d in ds])
    xs, ys = bx + r * np.cos(phis), by + r * np.sin(phis)
    img = np.rint(render_spots(geo.detector.shape, xs, ys, ns, bg=0.5)).astype(np.int32)
    return img, xs, ys


def test_resolution_map_and_ice_rings():
    geo = _ring_geometry()
    d = resolution_map(geo)
    assert d.dtype == np.float32 and np.isinf(d[150, 150]) or d[150, 150] > 1e3
    assert d[150, 150 + round(_radius_px(3.0, geo))] == pytest.approx(3.0, rel=0.01)
    assert on_ice_ring(np.array([3.669, 3.0, 1.721, np.nan, -1.0])).tolist() == [
        True, False, True, False, False]
    assert not on_ice_ring(np.array([1 / (1 / 3.669 + 0.006)]), 0.005)[0]
    assert len(ICE_RINGS_A) == 10
    # the numpy map equals the JAX physics function (tilted detector, off-axis beam centre)
    import jax.numpy as jnp

    from jfx.physics.diffraction import pixel_resolution

    det = Detector.create(55.0, (40.3, -12.7), (64, 80), fast_axis=(1.0, 0.05, 0.1),
                          slow_axis=(-0.05, 1.0, 0.02))
    g = Geometry(beam=Beam.create(0.9), detector=det)
    yy, xx = np.mgrid[0:64, 0:80].astype(np.float64)
    ref = np.asarray(pixel_resolution(det, g.beam, jnp.asarray(xx), jnp.asarray(yy)))
    np.testing.assert_allclose(resolution_map(g), ref, rtol=1e-6)


def test_ice_flags_resolution_filters_and_max_spots():
    geo = _ring_geometry()
    rng = np.random.default_rng(8)
    ds = np.array([3.669, 3.669, 3.441, 5.0, 4.3, 3.0, 2.8, 2.6])  # 3 on ice rings
    ns = np.array([800, 900, 700, 3000, 1500, 2500, 600, 1200], float)
    phis = np.linspace(0, 2 * np.pi, ds.size, endpoint=False) + rng.uniform(0, 0.2, ds.size)
    img, xs, ys = _spots_at(geo, ds, phis, ns)
    ice_true = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)

    def run(**kw):
        kw = {"high_resolution_A": None, **kw}
        f = ThresholdSpotFinder.create(Settings(**kw), geo, None, None, None)
        return f(img[None], np.array([0]))

    r = run()
    v = r.spots.valid[0]
    assert v.sum() == 8 and r.stats["n_ice"][0] == 3
    _, j = cKDTree(np.c_[xs, ys]).query(np.c_[r.spots.x_px[0][v], r.spots.y_px[0][v]])
    np.testing.assert_array_equal(r.spots.ice_ring[0][v], ice_true[j])
    np.testing.assert_allclose(r.spots.d_A[0][v], ds[j], rtol=0.01)
    # strongest first (default)
    assert np.all(np.diff(r.spots.intensity[0][v]) <= 0)
    assert np.all(np.diff(run(keep="lowest_resolution").spots.d_A[0][v]) <= 0)
    # drop ice rings
    r = run(drop_ice_rings=True)
    assert r.stats["n_spots"][0] == 5 and r.stats["n_ice"][0] == 0
    # resolution limits
    r = run(high_resolution_A=2.9)
    assert r.stats["n_spots"][0] == 6 and np.all(r.spots.d_A[0][r.spots.valid[0]] >= 2.9)
    r = run(high_resolution_A=2.7, low_resolution_A=4.0)
    assert r.stats["n_spots"][0] == 5
    # max_spots rules
    r = run(max_spots=3, keep="lowest_resolution")
    assert r.stats["n_spots"][0] == 3 and r.stats["n_spots_found"][0] == 8
    assert r.spots.n_found[0] == 8 and bool(r.spots.overflow[0])
    np.testing.assert_allclose(r.spots.d_A[0], [5.0, 4.3, 3.669], rtol=0.01)
    # stratified with 8 spots < 10 shells: every spot is its own shell, so the order is the
    # strongest first (the shell rule itself: tests/spotfind/test_filters.py)
    r = run(max_spots=3, keep="stratified")
    _, j = cKDTree(np.c_[xs, ys]).query(np.c_[r.spots.x_px[0], r.spots.y_px[0]])
    np.testing.assert_array_equal(j, [3, 5, 4])
    r = run(max_spots=3)
    _, j = cKDTree(np.c_[xs, ys]).query(np.c_[r.spots.x_px[0], r.spots.y_px[0]])
    np.testing.assert_array_equal(j, [3, 5, 4])  # the three brightest, brightest first
    assert np.all(np.diff(r.spots.intensity[0]) <= 0)
    # padding
    r = run(max_spots=20)
    assert r.spots.x_px.shape == (1, 20) and np.isnan(r.spots.x_px[0, 8:]).all()
    assert not r.spots.valid[0, 8:].any() and (r.spots.n_pixels[0, 8:] == 0).all()


def test_min_max_pixels_and_empty_frames():
    geo = _ring_geometry((101, 101))
    img = np.zeros((2, 101, 101), np.int32)
    img[0, 20, 20] = 50                    # single-pixel spot
    img[0, 60:66, 60:66] = 40              # 36-pixel blob
    f = lambda **kw: ThresholdSpotFinder.create(
        Settings(high_resolution_A=None, **kw), geo, None, None, None)
    assert f(min_pixels=1)(img, np.array([0, 1])).stats["n_spots"].tolist() == [2, 0]
    # default min_pixels = 2 drops the single pixel; the flat blob's peak is its centre
    assert f()(img, np.array([0, 1])).stats["n_spots"].tolist() == [1, 0]
    assert f(min_pixels=1, max_pixels=10)(img, np.array([0, 1])).stats["n_spots"].tolist() \
        == [1, 0]
    r = f(min_pixels=1)(img, np.array([0, 1]))
    assert np.isnan(r.stats["resolution_estimate"]).all()  # < 5 spots
    assert r.stats["strong_pixels"].tolist() == [37, 0]


@pytest.mark.parametrize("kw", [{"max_spots": -1}, {"max_spots": 0}, {"sigma": 0},
                                {"sigma": -1}, {"window": 30}, {"window": 1},
                                {"min_pixels": 0}, {"min_pixels": 5, "max_pixels": 4},
                                {"keep": "random"}, {"ice_ring_width_invA": 0},
                                {"centroid_grow_px": -1}, {"drop_ice_rings": "perhaps"},
                                {"high_resolution_A": 3.0, "low_resolution_A": 2.0}])
def test_bad_settings_rejected(kw):
    with pytest.raises(ValueError):
        Settings(**kw)


def test_create_and_call_checks():
    geo = _ring_geometry((50, 60))
    with pytest.raises(ValueError):
        ThresholdSpotFinder.create(Settings(), geo, np.zeros((50, 61), bool), None, None)
    f = ThresholdSpotFinder.create(Settings(), geo, None, None, None)
    with pytest.raises(ValueError):
        f(np.zeros((1, 50, 61), np.int32), np.array([0]))
    with pytest.raises(ValueError):
        f(np.zeros((1, 50, 60), np.float32), np.array([0]))
    with pytest.raises(ValueError):
        f(np.zeros((2, 50, 60), np.int32), np.array([0]))
