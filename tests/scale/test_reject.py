"""Outlier / image rejection (jfx.scale.reject) against independent per-reflection references."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.scale.reject import (
    cc_half,
    delta_cc_half,
    image_cc,
    image_chi2,
    image_halves,
    outlier_mask,
    reject_images_cc,
    reject_images_chi2,
    reject_images_delta_cc,
)


# ----------------------------------------------------------------------------- references
def _outliers_reference(refl, I, sigma, n_sigma, min_obs=3):
    """Python loop over reflections, np.median: the documented rule, written independently."""
    out = np.zeros(len(I), bool)
    ok = np.isfinite(I) & np.isfinite(sigma) & (sigma > 0)
    for r in np.unique(refl[ok]):
        sel = np.flatnonzero(ok & (refl == r))
        m = len(sel)
        if m < min_obs:
            continue
        med = np.median(I[sel])
        mad = np.median(np.abs(I[sel] - med))
        s_med = np.sqrt(np.pi / 2) * 1.4826 * mad / np.sqrt(m)
        for j in sel:
            out[j] = abs(I[j] - med) > n_sigma * np.sqrt(sigma[j] ** 2 + s_med**2)
    return out


def _cc_half_reference(refl, image, I, sigma, half, weighted=True, drop=None):
    """Dictionary merge per half-set, then np.corrcoef; ``drop`` = image left out."""
    sums = {}
    for r, i, x, s in zip(refl, image, I, sigma):
        if i == drop or not np.isfinite(x):
            continue
        w = 1.0 / s**2 if weighted else 1.0
        a = sums.setdefault((int(r), int(half[i])), [0.0, 0.0])
        a[0] += w * x
        a[1] += w
    rs = sorted({r for (r, h) in sums if (r, 1 - h) in sums and h == 0})
    x = np.array([sums[(r, 0)][0] / sums[(r, 0)][1] for r in rs])
    y = np.array([sums[(r, 1)][0] / sums[(r, 1)][1] for r in rs])
    return np.corrcoef(x, y)[0, 1]


def _serial_data(rng, n_img=40, n_refl=300, per_img=120, rel_noise=0.15, bad=()):
    """Observations of Wilson-like true intensities; images in ``bad`` get random intensities."""
    i_true = rng.exponential(1000.0, n_refl)
    refl, image, I, sig = [], [], [], []
    for i in range(n_img):
        r = rng.choice(n_refl, per_img, replace=False)
        # a few duplicates inside an image (symmetry mates of one unique reflection)
        r = np.concatenate([r, r[:5]])
        s = 20.0 + rel_noise * i_true[r]
        x = i_true[r] + rng.normal(0, 1, r.size) * s
        if i in bad:
            x = rng.permutation(x)
        refl.append(r)
        image.append(np.full(r.size, i))
        I.append(x)
        sig.append(s)
    cat = np.concatenate
    return cat(refl), cat(image), cat(I), cat(sig), i_true


# ----------------------------------------------------------------------------- outliers
def test_outlier_mask_matches_reference_rule():
    rng = np.random.default_rng(1)
    n_refl = 400
    counts = rng.integers(1, 9, n_refl)
    refl = np.repeat(np.arange(n_refl), counts)
    rng.shuffle(refl)
    truth = rng.exponential(500.0, n_refl)
    sigma = rng.uniform(5.0, 40.0, refl.size)
    I = truth[refl] + rng.normal(0, 1, refl.size) * sigma * rng.choice([1.0, 4.0], refl.size,
                                                                       p=[0.9, 0.1])
    I[::97] = np.nan                    # invalid observations take no part
    sigma[5] = -1.0
    for n_sigma in (2.0, 3.0, 4.0):
        got = outlier_mask(refl, I, sigma, n_sigma)
        ref = _outliers_reference(refl, I, sigma, n_sigma)
        np.testing.assert_array_equal(got, ref)
        assert got.any()
    assert not outlier_mask(refl, I, sigma, 2.0)[::97].any()


def test_outlier_mask_finds_planted_outliers_and_keeps_gaussian_data():
    rng = np.random.default_rng(2)
    n_refl, m = 3000, 6
    refl = np.repeat(np.arange(n_refl), m)
    truth = rng.exponential(1000.0, n_refl)
    sigma = 10.0 + 0.05 * truth[refl]
    I = truth[refl] + rng.normal(0, 1, refl.size) * sigma
    planted = rng.choice(refl.size, 150, replace=False)
    planted = planted[np.unique(refl[planted], return_index=True)[1]]  # ≤ 1 per reflection
    I[planted] += rng.choice([-10.0, 10.0], planted.size) * sigma[planted]
    rej = outlier_mask(refl, I, sigma, 4.0)
    assert rej[planted].all()
    good = np.ones(refl.size, bool)
    good[planted] = False
    assert rej[good].mean() < 0.01
    # Too few observations: never tested.
    few = outlier_mask(np.array([0, 0, 1, 1, 1]), np.array([0.0, 100.0, 0.0, 0.1, 100.0]),
                       np.ones(5), 3.0)
    np.testing.assert_array_equal(few, [False, False, False, False, True])


def test_outlier_mask_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        outlier_mask([0, 0, 0], [1.0, 2, 3], [1.0, 1, 1], 0.0)
    with pytest.raises(ValueError, match="refl"):
        outlier_mask([0, 0], [1.0, 2, 3], [1.0, 1, 1], 3.0)
    with pytest.raises(ValueError, match="≥ 0"):
        outlier_mask([0, -1, 0], [1.0, 2, 3], [1.0, 1, 1], 3.0)


# ----------------------------------------------------------------------------- image CC
def test_image_cc_matches_corrcoef():
    rng = np.random.default_rng(3)
    refl, image, I, _, i_true = _serial_data(rng, n_img=12)
    merged = i_true * rng.uniform(0.9, 1.1, i_true.size)
    merged[7] = np.nan
    # image 11 keeps only 2 observations → undefined
    keep = (image != 11) | (np.arange(image.size) % 50 == 0)
    refl, image, I = refl[keep], image[keep], I[keep]
    assert (image == 11).sum() == 2
    cc = image_cc(refl, image, I, merged, 13)
    assert cc.shape == (13,)
    for i in range(11):
        sel = (image == i) & np.isfinite(merged[refl])
        assert cc[i] == pytest.approx(np.corrcoef(I[sel], merged[refl[sel]])[0, 1], abs=1e-12)
    assert np.isnan(cc[11]) and np.isnan(cc[12])
    rej = reject_images_cc(cc, 95.0)
    np.testing.assert_array_equal(rej[:11], 100 * cc[:11] < 95.0)
    assert not rej[11] and reject_images_cc(cc, 95.0, reject_undefined=True)[11]


# ----------------------------------------------------------------------------- CC½ / ΔCC½
@pytest.mark.parametrize("weighted", [True, False])
def test_delta_cc_half_matches_brute_force(weighted):
    rng = np.random.default_rng(4)
    refl, image, I, sig, _ = _serial_data(rng, n_img=24, n_refl=150, per_img=40, bad=(5,))
    # A reflection observed by one image only in its half: removing that image drops it.
    refl = np.concatenate([refl, [150, 150, 151]])
    image = np.concatenate([image, [0, 1, 2]])
    I = np.concatenate([I, [5.0, 7.0, 3.0]])
    sig = np.concatenate([sig, [1.0, 2.0, 1.0]])
    I[10] = np.nan
    n_img, n_refl = 25, 152                 # image 24 has no observation
    half = image_halves(n_img, seed=7)
    cc_all = cc_half(refl, image, I, sig, half, n_refl, n_img, weighted=weighted)
    assert cc_all == pytest.approx(_cc_half_reference(refl, image, I, sig, half, weighted),
                                   abs=1e-12)
    d = delta_cc_half(refl, image, I, sig, half, n_refl, n_img, weighted=weighted)
    brute = np.array([cc_all - _cc_half_reference(refl, image, I, sig, half, weighted, drop=i)
                      for i in range(24)])
    np.testing.assert_allclose(d[:24], brute, rtol=0, atol=1e-11)
    assert np.isnan(d[24])
    assert np.argmin(d[:24]) == 5


def test_delta_cc_half_rejects_planted_bad_image():
    rng = np.random.default_rng(5)
    n_img = 60
    refl, image, I, sig, _ = _serial_data(rng, n_img=n_img, n_refl=500, per_img=150, bad=(17,))
    half = image_halves(n_img)
    d = delta_cc_half(refl, image, I, sig, half, 500, n_img)
    assert np.argmin(d) == 17 and d[17] < 0
    for n_sigma in (2.5, 3.0):
        rej = reject_images_delta_cc(d, n_sigma)
        assert rej[17]
        assert rej.sum() == 1, np.flatnonzero(rej)
    # Removing the rejected image raises CC½.
    keep = image != 17
    assert cc_half(refl[keep], image[keep], I[keep], sig[keep], half, 500, n_img) > cc_half(
        refl, image, I, sig, half, 500, n_img)


def test_reject_images_delta_cc_rule():
    d = np.array([0.01, 0.012, 0.009, 0.011, -0.2, np.nan])
    fin = d[:5]
    thr = fin.mean() - 1.5 * fin.std()
    np.testing.assert_array_equal(reject_images_delta_cc(d, 1.5), np.r_[fin < thr, False])
    assert not reject_images_delta_cc(np.array([np.nan, 1.0]), 1.0).any()


def test_image_halves_balanced():
    h = image_halves(11)
    np.testing.assert_array_equal(h, np.arange(11) % 2)
    r = image_halves(1000, seed=3)
    assert r.sum() == 500 and not np.array_equal(r, image_halves(1000))


def test_image_chi2_matches_loop_and_flags_a_disagreeing_image():
    rng = np.random.default_rng(5)
    n_img, n_refl = 40, 300
    truth = rng.exponential(100.0, n_refl)
    image = np.repeat(np.arange(n_img), 60)
    refl = rng.integers(0, n_refl, image.size)
    sigma = rng.uniform(2.0, 30.0, image.size)  # weak and strong images alike
    I = truth[refl] + sigma * rng.standard_normal(image.size)
    bad = image == 11
    I[bad] = rng.permutation(I[bad])  # a crystal that does not belong
    chi2 = image_chi2(refl, image, I, sigma, truth, n_img, clip=100.0, min_obs=10)
    for i in (0, 11, 39):  # plain-loop reference
        m = image == i
        ref = np.mean(np.minimum(((I[m] - truth[refl[m]]) / sigma[m]) ** 2, 100.0))
        assert chi2[i] == pytest.approx(ref, rel=1e-12)
    good = np.delete(chi2, 11)
    assert np.all(np.abs(good - 1.0) < 0.6)  # unit variance whatever the image's σ
    rej = reject_images_chi2(chi2, 5.0)
    assert np.flatnonzero(rej).tolist() == [11]
    few = image_chi2(refl[:5], image[:5], I[:5], sigma[:5], truth, n_img, min_obs=10)
    assert np.isnan(few).all()
    # the absolute floor: a tight distribution does not condemn an image at chi2 ≤ 3
    assert not reject_images_chi2(np.r_[np.full(20, 1.0), 2.5], 5.0).any()
    with pytest.raises(ValueError, match="> 0"):
        reject_images_chi2(chi2, 0.0)

