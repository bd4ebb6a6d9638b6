"""Tests of jfx.integrate.summation against analytic / simulated ground truth."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jfx  # noqa: F401
from jfx.integrate.summation import (
    SummationResult,
    box_offsets,
    combine_partials,
    integrate_frame,
)
from jfx.models.reflections import ReflectionFlag as F
from jfx.sim.forward import gaussian_patches, splat

SCALE = 1000  # noiseless tests: photons × SCALE rounded to integers (error ≤ 5e-4 photons/px)


def spot_image(shape, x, y, photons, sigma=1.0, patch=21):
    """Expected photons per pixel of pixel-integrated Gaussian spots (float64 (ny, nx))."""
    x, y, photons = (np.atleast_1d(np.asarray(a, float)) for a in (x, y, photons))
    iy0, ix0, vals = gaussian_patches(jnp.asarray(x), jnp.asarray(y),
                                      jnp.full(x.shape, float(sigma)), jnp.asarray(photons), patch)
    return np.asarray(splat(shape, iy0, ix0, vals, jnp.ones(x.shape, bool)), np.float64)


def scaled(img):
    return np.round(np.asarray(img) * SCALE).astype(np.int32)


def disc_count(x, y, r1, shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return int(np.sum((xx - x) ** 2 + (yy - y) ** 2 < r1 * r1))


@pytest.mark.parametrize("impl", ["numpy", "jax"])
@pytest.mark.parametrize("background", ["robust_mean", "plane"])
def test_noiseless_spot_on_flat_background(impl, background):
    shape = (48, 56)
    x, y, N, b = 27.3, 21.8, 1500.0, 3.0
    img = spot_image(shape, x, y, N) + b
    r = integrate_frame(scaled(img), None, [x], [y], None, (6.0, 8.0, 11.0),
                        background=background, impl=impl)
    assert r.flags[0] == F.INTEGRATED_SUM
    assert abs(r.intensity[0] / SCALE - N) < 0.01 * N
    # the background is exactly flat (tails of the σ = 1 px spot at r ≥ 8 are < 1e-12)
    # (float32 pixel arrays, float64 sums: the plane fit's moments round at ~1e-7)
    assert r.background[0] == pytest.approx(b * SCALE, rel=1e-7, abs=1e-9)
    assert r.n_signal[0] == disc_count(x, y, 6.0, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    assert r.n_background[0] == int(np.sum((d2 >= 64) & (d2 < 121)))
    assert r.masked_fraction[0] == 0.0


def test_single_radius_means_r_r2_r4():
    shape = (40, 40)
    img = scaled(spot_image(shape, 20.0, 20.0, 500.0) + 1.0)
    a = integrate_frame(img, None, [20.0], [20.0], None, (4.0,))
    b = integrate_frame(img, None, [20.0], [20.0], None, (4.0, 6.0, 8.0))
    assert a.intensity[0] == b.intensity[0] and a.n_background[0] == b.n_background[0]


def test_plane_background_exact_on_gradient():
    shape = (50, 50)
    x, y, N = 24.6, 25.3, 800.0
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    bg = 5.0 + 0.3 * (xx - x) - 0.2 * (yy - y)
    img = scaled(spot_image(shape, x, y, N) + bg)
    p = integrate_frame(img, None, [x], [y], None, (5.0, 7.0, 10.0), background="plane")
    assert abs(p.intensity[0] / SCALE - N) < 2e-3 * N
    # background under the disc = plane averaged over disc pixels
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    assert p.background[0] / SCALE == pytest.approx(bg[d2 < 25].mean(), rel=1e-5)


def test_variance_matches_poisson_realisations():
    """≥ 500 Poisson realisations of one spot: empirical var(I) = mean predicted var (10 %)."""
    rng = np.random.default_rng(12345)
    sp = 24
    ny, nx = 20 * sp, 25 * sp
    gy, gx = np.mgrid[0:20, 0:25]
    fx, fy = 0.37, -0.21
    x = (gx * sp + sp / 2 + fx).ravel().astype(float)
    y = (gy * sp + sp / 2 + fy).ravel().astype(float)
    N, b = 300.0, 1.5
    expected = spot_image((ny, nx), x, y, np.full(x.size, N), sigma=1.2) + b
    I, V = [], []
    for _ in range(3):  # 3 × 500 realisations
        frame = rng.poisson(expected).astype(np.int32)
        r = integrate_frame(frame, None, x, y, None, (4.0, 6.0, 9.0))
        assert np.all(r.flags == F.INTEGRATED_SUM)
        I.append(r.intensity)
        V.append(r.variance)
    I, V = np.concatenate(I), np.concatenate(V)
    emp = np.var(I, ddof=1)
    assert emp == pytest.approx(V.mean(), rel=0.10)
    # unbiased: mean I = photons inside the disc
    frac = 1.0 - np.exp(-0.5 * 16 / 1.2**2)
    assert I.mean() == pytest.approx(N * frac, abs=3 * np.sqrt(emp / I.size) + 0.01 * N)


def test_low_background_not_biased_by_rejection():
    """Poisson(0.5) background: robust mean unbiased (the upper tail is not clipped)."""
    rng = np.random.default_rng(7)
    ny, nx = 400, 400
    gy, gx = np.mgrid[0:20, 0:20]
    x = (gx * 20 + 10.0).ravel()
    y = (gy * 20 + 10.0).ravel()
    bs = []
    for _ in range(3):
        frame = rng.poisson(0.5, size=(ny, nx)).astype(np.int32)
        bs.append(integrate_frame(frame, None, x, y, None, (3.0, 5.0, 7.0)).background)
    bs = np.concatenate(bs)
    assert bs.mean() == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize("background", ["robust_mean", "plane"])
def test_hot_pixel_and_unpredicted_spot_do_not_bias_background(background):
    shape = (60, 60)
    x, y, N, b = 30.2, 29.7, 1000.0, 4.0
    base = spot_image(shape, x, y, N) + b
    # hot pixel in the annulus (r2=5, r3=9)
    hot = base.copy()
    hot[30, 37] = 5e5
    r = integrate_frame(scaled(hot), None, [x], [y], None, (4.0, 5.0, 9.0), background=background)
    assert r.background[0] / SCALE == pytest.approx(b, abs=1e-3)  # spot tail at r=5: ~1e-4
    assert abs(r.intensity[0] / SCALE - N) < 0.01 * N
    # an unpredicted neighbouring spot centred in the annulus
    nb = base + spot_image(shape, x + 7.0, y + 0.3, 2000.0, sigma=0.8)
    r = integrate_frame(scaled(nb), None, [x], [y], None, (4.0, 5.0, 9.0), background=background)
    naive = scaled(nb).astype(float)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    naive_b = naive[(d2 >= 25) & (d2 < 81)].mean() / SCALE
    assert naive_b > 1.5 * b  # the plain mean would be badly biased
    assert abs(r.background[0] / SCALE - b) < 0.05 * b
    assert abs(r.intensity[0] / SCALE - N) < 0.03 * N


def test_flags_masked_saturated_edge_bad_background_invalid():
    shape = (60, 80)
    pos = np.array([[15.0, 15.0], [40.0, 15.0], [60.0, 15.0], [1.0, 45.0], [200.0, 45.0],
                    [40.0, 45.0], [60.0, 45.0], [np.nan, 10.0]])
    x, y = pos[:, 0], pos[:, 1]
    img = spot_image(shape, x[:7], y[:7], np.full(7, 500.0)) + 2.0
    fr = scaled(img)
    mask = np.zeros(shape, bool)
    err = -7
    fr[15, 16] = err  # error-valued pixel in disc of row 0
    mask[15, 41] = True  # masked pixel in disc of row 1
    fr[15, 60] = 10**9  # saturated pixel in disc of row 2
    ann = (np.mgrid[: shape[0], : shape[1]][1] - 40.0) ** 2 + (
        np.mgrid[: shape[0], : shape[1]][0] - 45.0) ** 2
    mask[(ann >= 25) & (ann < 64)] = True  # annulus of row 5 fully masked
    valid = np.array([1, 1, 1, 1, 1, 1, 0, 1], bool)
    for impl in ("numpy", "jax"):
        r = integrate_frame(fr, mask, x, y, valid, (3.0, 5.0, 8.0), error_value=err,
                            saturation_value=10**9, impl=impl)
        n_disc = disc_count(15.0, 15.0, 3.0, (1000, 1000))
        assert r.flags[0] == F.INTEGRATED_SUM | F.MASKED_PIXEL
        assert r.flags[1] == F.INTEGRATED_SUM | F.MASKED_PIXEL
        assert r.flags[2] == F.INTEGRATED_SUM | F.OVERLOADED
        assert r.masked_fraction[0] == pytest.approx(1.0 / n_disc)
        assert r.n_signal[0] == n_disc - 1
        # the excluded pixel's photons are missing from the sum, nothing else
        fr0 = fr.astype(float)
        assert r.flags[3] & F.EDGE and r.flags[3] & F.INTEGRATED_SUM
        assert r.n_signal[3] == disc_count(1.0, 45.0, 3.0, shape)
        assert r.flags[4] == F.EDGE | F.BAD_BACKGROUND and np.isnan(r.intensity[4])
        assert r.n_signal[4] == 0
        assert r.flags[5] == F.BAD_BACKGROUND and np.isnan(r.intensity[5])
        assert r.flags[6] == 0 and np.isnan(r.intensity[6])
        assert r.flags[7] & F.EDGE and not r.flags[7] & F.INTEGRATED_SUM
        # row 0: sum over the good disc pixels only
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        d = ((xx - 15.0) ** 2 + (yy - 15.0) ** 2 < 9) & (fr != err)
        assert r.background[0] == pytest.approx(2.0 * SCALE, abs=1.0)
        assert r.intensity[0] == pytest.approx(fr0[d].sum() - d.sum() * r.background[0], rel=1e-12)
        assert r.variance[0] == pytest.approx(
            fr0[d].sum() + d.sum() ** 2 * r.background[0] / r.n_background[0], rel=1e-12)


@pytest.mark.parametrize("impl", ["numpy", "jax"])
def test_overlap_flag_and_exclusion_from_background(impl):
    shape = (60, 80)
    # A and B: discs (r1=3) disjoint, B's disc inside A's annulus (5..9) and vice versa;
    # C far away: no overlap
    x = np.array([30.0, 36.5, 65.0])
    y = np.array([30.0, 30.4, 30.0])
    N = np.array([1000.0, 3000.0, 800.0])
    img = spot_image(shape, x, y, N, sigma=0.7, patch=15) + 2.0
    r = integrate_frame(scaled(img), None, x, y, None, (3.0, 5.0, 9.0), impl=impl)
    assert r.flags[0] == F.INTEGRATED_SUM | F.OVERLAP
    assert r.flags[1] == F.INTEGRATED_SUM | F.OVERLAP
    assert r.flags[2] == F.INTEGRATED_SUM
    # B's disc pixels are excluded from A's background, so A's background is still exact-ish
    assert abs(r.background[0] / SCALE - 2.0) < 0.02
    assert abs(r.intensity[0] / SCALE - 1000.0) < 0.02 * 1000.0
    # disc-disc overlap: two spots 2 px apart
    r = integrate_frame(scaled(img), None, [30.0, 32.0], [30.0, 30.0], None, (3.0, 5.0, 9.0),
                        impl=impl)
    assert np.all(r.flags & F.OVERLAP)


@pytest.mark.parametrize("background", ["robust_mean", "plane"])
def test_jax_equals_numpy_on_random_frames(background):
    rng = np.random.default_rng(3)
    shape = (96, 120)
    n = 150
    x = rng.uniform(-6, shape[1] + 6, n)
    y = rng.uniform(-6, shape[0] + 6, n)
    x[:3] = x[3:6]  # exact duplicates
    y[:3] = y[3:6]
    x[10] = np.nan
    img = rng.poisson(1.3, size=shape).astype(np.int32)
    img += scaled(spot_image(shape, x[20:60], y[20:60], rng.uniform(50, 500, 40))) // SCALE
    mask = rng.random(shape) < 0.02
    img[rng.random(shape) < 0.01] = -1
    img[rng.random(shape) < 0.005] = 60000
    valid = rng.random(n) < 0.9
    kw = {"error_value": -1, "saturation_value": 60000, "background": background}
    a = integrate_frame(img, mask, x, y, valid, (2.5, 4.0, 6.5), impl="numpy", **kw)
    b = integrate_frame(img, mask, x, y, valid, (2.5, 4.0, 6.5), impl="jax", **kw)
    np.testing.assert_array_equal(a.flags, b.flags)
    np.testing.assert_array_equal(a.n_signal, b.n_signal)
    np.testing.assert_array_equal(a.n_background, b.n_background)
    for k in ("intensity", "variance", "background", "background_sigma", "masked_fraction"):
        # float32 pixel arrays, float64 sums: equal up to float32 rounding of the products
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-6, atol=1e-6)
    assert np.sum(a.flags & F.INTEGRATED_SUM) > 50  # the comparison covers real rows
    assert np.any(a.flags & F.OVERLAP) and np.any(a.flags & F.EDGE)


def test_box_offsets_cover_all_pixels_within_r3():
    r1, r2, r3 = 2.6, 4.2, 6.3
    oy, ox, n_disc, a0 = box_offsets((r1, r2, r3))
    have = set(zip(oy.tolist(), ox.tolist()))
    disc = set(zip(oy[:n_disc].tolist(), ox[:n_disc].tolist()))
    ann = set(zip(oy[a0:].tolist(), ox[a0:].tolist()))
    rng = np.random.default_rng(0)
    for fx, fy in rng.uniform(-0.5, 0.5, (200, 2)):
        for dy in range(-9, 10):
            for dx in range(-9, 10):
                d2 = (dx - fx) ** 2 + (dy - fy) ** 2
                if d2 < r3 * r3:
                    assert (dy, dx) in have
                if d2 < r1 * r1:
                    assert (dy, dx) in disc
                if r2 * r2 <= d2 < r3 * r3:
                    assert (dy, dx) in ann


def rotation_rows(frames, first_image, image, x, y, radii, used=None):
    """Per-(reflection, frame) summation rows the way the integration stage makes them:
    each frame's rows integrated together on that frame (rows not used stay NaN)."""
    m = len(image)
    used = np.ones(m, bool) if used is None else np.asarray(used, bool)
    out = {k: np.full(m, np.nan) for k in ("intensity", "variance", "background",
                                          "background_sigma", "masked_fraction")}
    out.update(n_signal=np.zeros(m, np.int32), n_background=np.zeros(m, np.int32),
               flags=np.zeros(m, np.uint32))
    for k in np.unique(image[used]):
        rows = np.flatnonzero(used & (image == k))
        res = integrate_frame(frames[k - first_image], None, x[rows], y[rows], None, radii)
        for name in out:
            out[name][rows] = getattr(res, name)
    return SummationResult(**out)


def test_rotation_spot_split_over_three_frames_sums_to_total():
    shape = (50, 50)
    N, b = 2400.0, 1.0
    fr = np.array([0.25, 0.5, 0.25])
    xs = np.array([20.0, 21.0, 22.0])  # the spot moves 1 px per frame
    ys = np.array([25.0, 25.2, 25.4])
    frames = np.stack([scaled(spot_image(shape, xs[i], ys[i], N * fr[i]) + b) for i in range(3)])
    # a second reflection on frame 11 only (group 1), far from the first
    frames[1] += scaled(spot_image(shape, 40.0, 10.0, 700.0))
    image = np.array([10, 11, 12, 11])
    x = np.append(xs, 40.0)
    y = np.append(ys, 10.0)
    f = np.append(fr, 1.0)
    g = np.array([0, 0, 0, 1])
    radii = (4.0, 6.0, 9.0)
    rows = rotation_rows(frames, 10, image, x, y, radii)
    res = combine_partials(rows, g, f, np.ones(4, bool), 2)
    assert res.intensity[0] / SCALE == pytest.approx(N, rel=0.01)
    assert res.intensity[1] / SCALE == pytest.approx(700.0, rel=0.01)
    assert res.n_frames.tolist() == [3, 1] and res.fraction.tolist() == [1.0, 1.0]
    assert res.flags[0] == F.INTEGRATED_SUM and res.flags[1] == F.INTEGRATED_SUM
    np.testing.assert_allclose(res.intensity[0], np.sum(rows.intensity[:3]), rtol=1e-12)
    np.testing.assert_allclose(res.variance[0], np.sum(rows.variance[:3]), rtol=1e-12)
    # only frames 11 and 12 given: fraction 0.75 recorded; I / F estimates the full reflection
    used = image != 10
    part = combine_partials(rotation_rows(frames, 10, image, x, y, radii, used), g, f, used, 2)
    assert part.fraction[0] == pytest.approx(0.75)
    assert part.flags[0] == F.INTEGRATED_SUM | F.PARTIAL
    assert part.intensity[0] / part.fraction[0] / SCALE == pytest.approx(N, rel=0.01)
    assert part.variance[0] == pytest.approx(np.sum(rows.variance[1:3]), rel=1e-9)


def test_integrate_frame_input_errors():
    img = scaled(spot_image((30, 30), 15.0, 15.0, 100.0) + 1.0)
    with pytest.raises(ValueError, match="radii"):
        integrate_frame(img, None, [1.0], [1.0], None, (3.0, 2.0, 5.0))
    with pytest.raises(ValueError, match="background"):
        integrate_frame(img, None, [1.0], [1.0], None, (3.0,), background="median")
    with pytest.raises(ValueError, match="integer"):
        integrate_frame(img.astype(float), None, [1.0], [1.0], None, (3.0,))


def test_rotation_same_frame_overlap_and_unused_rows():
    shape = (40, 60)
    frames = np.stack([scaled(spot_image(shape, [20.0, 24.0], [20.0, 20.0], [500.0, 500.0])
                              + 1.0)] * 2)
    image = np.array([0, 0, 1, 1])
    x = np.array([20.0, 24.0, 20.0, 40.0])
    y = np.array([20.0, 20.0, 20.0, 20.0])
    f = np.array([0.6, 1.0, 0.4, 0.5])
    g = np.array([0, 1, 0, 2])
    used = np.array([1, 1, 1, 0], bool)  # group 2's only row is not meant to be integrated
    rows = rotation_rows(frames, 0, image, x, y, (3.0, 5.0, 8.0), used)
    res = combine_partials(rows, g, f, used, 3)
    # rows 0 and 1 are 4 px apart on frame 0: disc of one in the other's annulus
    assert rows.flags[0] & F.OVERLAP and rows.flags[1] & F.OVERLAP
    assert not rows.flags[2] & F.OVERLAP  # on frame 1 reflection 1 is not predicted
    assert res.flags[0] & F.OVERLAP and res.flags[0] & F.INTEGRATED_SUM
    assert res.n_frames[2] == 0 and np.isnan(res.intensity[2])
    assert res.flags[2] == F.PARTIAL and res.fraction[2] == 0.0
    with pytest.raises(ValueError, match="same length"):
        combine_partials(rows, g[:3], f, used, 3)
    with pytest.raises(ValueError, match="group indices"):
        combine_partials(rows, g, f, np.ones(4, bool), 2)


def test_combine_partials_failed_partial_and_profile_sums():
    shape = (50, 50)
    fr = np.array([0.3, 0.7])
    frames = np.stack([scaled(spot_image(shape, 20.0 + i, 25.0, 900.0 * fr[i]) + 2.0)
                       for i in range(2)])
    image, x, y, g = np.array([5, 6]), np.array([20.0, 21.0]), np.array([25.0, 25.0]), np.zeros(2)
    rows = rotation_rows(frames, 5, image, x, y, (4.0, 6.0, 9.0))
    prf = (np.array([280.0, 610.0]), np.array([3.0, 5.0]))
    c = combine_partials(rows, g, fr, np.ones(2, bool), 1, prf=prf)
    assert c.intensity[0] / SCALE == pytest.approx(900.0, rel=0.01)
    assert c.prf_intensity[0] == 890.0 and c.prf_variance[0] == 8.0
    assert c.flags[0] == F.INTEGRATED_SUM | F.INTEGRATED_PRF
    # a partial without a profile intensity: no profile sum for the reflection
    c = combine_partials(rows, g, fr, np.ones(2, bool), 1, prf=(np.array([280.0, np.nan]),
                                                                  prf[1]))
    assert np.isnan(c.prf_intensity[0]) and c.flags[0] == F.INTEGRATED_SUM
    # a partial that failed leaves the sum and the recorded fraction; its flags are kept
    bad = SummationResult(**{**{k: getattr(rows, k) for k in SummationResult.__dataclass_fields__},
                             "flags": np.array([int(F.INTEGRATED_SUM), int(F.EDGE)], np.uint32)})
    c = combine_partials(bad, g, fr, np.ones(2, bool), 1)
    assert c.intensity[0] == rows.intensity[0] and c.fraction[0] == pytest.approx(0.3)
    assert c.n_frames[0] == 1
    assert c.flags[0] == F.INTEGRATED_SUM | F.EDGE | F.PARTIAL


@pytest.mark.parametrize("impl", ["numpy", "jax"])
def test_overload_in_the_annulus_and_masked_fraction_flags(impl):
    fr = np.full((64, 64), 2, np.int32)
    x = np.array([20.0, 44.0, 46.0])
    y = np.array([20.0, 20.0, 44.0])
    fr[20, 26] = 100  # 6 px right of reflection 0: its annulus, no other disc covers it
    fr[44, 40] = 100  # 6 px left of reflection 2: its annulus
    mask = np.zeros(fr.shape, bool)
    # reflection 1 (44, 20): 4 of the 29 disc pixels masked (0.14 > 0.1); 2 would be 0.07
    mask[20, 44:48] = True
    r = integrate_frame(fr, mask, x, y, None, (3.0, 5.0, 7.0), saturation_value=100,
                        max_masked_fraction=0.1, impl=impl)
    fl = np.asarray(r.flags)
    over = (fl & np.uint32(int(F.OVERLOADED))) != 0
    mfrac = (fl & np.uint32(int(F.MASKED_FRACTION))) != 0
    assert over.tolist() == [True, False, True]
    assert mfrac.tolist() == [False, True, False]
    # the saturated pixel never enters the sums: reflection 0 keeps its flat-background zero
    assert r.intensity[0] == pytest.approx(0.0, abs=1e-9)
    mask2 = np.zeros(fr.shape, bool)
    mask2[20, 44:46] = True
    r2 = integrate_frame(fr, mask2, x, y, None, (3.0, 5.0, 7.0), saturation_value=100,
                         max_masked_fraction=0.1, impl=impl)
    assert not np.any(np.asarray(r2.flags)[1] & np.uint32(int(F.MASKED_FRACTION)))
    # a saturated annulus pixel covered by another reflection's disc belongs to that one
    x3, y3 = np.array([20.0, 26.0]), np.array([20.0, 20.0])
    r3 = integrate_frame(fr, None, x3, y3, None, (3.0, 5.0, 7.0), saturation_value=100,
                         impl=impl)
    f3 = np.asarray(r3.flags)
    assert not (f3[0] & np.uint32(int(F.OVERLOADED)))
    assert f3[1] & np.uint32(int(F.OVERLOADED))
