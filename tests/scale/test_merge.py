"""Merging (jfx.scale.merge) against per-reflection loops and gemmi's scalar API."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from jfx.models.merged import MergedReflections
from jfx.scale.merge import merge, merge_intensities
from jfx.symmetry.asu import asu_map


def _random_hkl(rng, n=400, hmax=7):
    hkl = rng.integers(-hmax, hmax + 1, size=(n, 3))
    return hkl[np.any(hkl != 0, axis=1)]


def _loop_merge(refl, I, sigma, m):
    mean = np.full(m, np.nan)
    sig = np.full(m, np.nan)
    cnt = np.zeros(m, int)
    for r in range(m):
        sw = swi = 0.0
        for j in range(len(refl)):
            if refl[j] == r and np.isfinite(I[j]) and np.isfinite(sigma[j]) and sigma[j] > 0:
                w = 1.0 / sigma[j] ** 2
                sw += w
                swi += w * I[j]
                cnt[r] += 1
        if cnt[r]:
            mean[r] = swi / sw
            sig[r] = 1.0 / np.sqrt(sw)
    return mean, sig, cnt


def test_merge_intensities_vs_loop():
    rng = np.random.default_rng(5)
    m, n = 12, 80
    refl = rng.integers(0, m - 2, n)  # last two reflections unobserved
    I = rng.normal(100, 30, n)
    sigma = rng.uniform(1, 10, n)
    sigma[3] = 0.0  # ignored
    I[7] = np.nan  # ignored
    mean, sig, cnt = merge_intensities(refl, I, sigma, m)
    em, es, ec = _loop_merge(refl, I, sigma, m)
    np.testing.assert_allclose(mean, em, rtol=1e-12)
    np.testing.assert_allclose(sig, es, rtol=1e-12)
    assert np.array_equal(cnt, ec)
    assert np.isnan(mean[-2:]).all() and (cnt[-2:] == 0).all()


def test_merge_intensities_general_weights():
    refl = np.array([0, 0, 0, 1])
    I = np.array([1.0, 2.0, 4.0, 5.0])
    sigma = np.array([1.0, 2.0, 1.0, 3.0])
    w = np.array([1.0, 1.0, 2.0, 1.0])
    mean, sig, n = merge_intensities(refl, I, sigma, 2, weights=w)
    assert n.tolist() == [3, 1]
    assert mean[0] == pytest.approx((1 + 2 + 8) / 4)
    assert sig[0] == pytest.approx(np.sqrt(1 + 4 + 4) / 4)
    assert mean[1] == 5.0 and sig[1] == pytest.approx(3.0)
    # w = 1/σ² reproduces the inverse-variance merge
    m2, s2, _ = merge_intensities(refl, I, sigma, 2, weights=1 / sigma ** 2)
    m1, s1, _ = merge_intensities(refl, I, sigma, 2)
    np.testing.assert_allclose(m2, m1)
    np.testing.assert_allclose(s2, s1)


def test_merge_anomalous_vs_loop():
    number = 19  # P 21 21 21: 0kl, h0l, hk0 centric; h00, 0k0, 00l odd absent
    cell = (40.0, 50.0, 60.0, 90.0, 90.0, 90.0)
    rng = np.random.default_rng(11)
    hkl = _random_hkl(rng, 600, 4)
    amap = asu_map(hkl, number, anomalous=True)
    I = rng.normal(50, 20, len(hkl))
    sigma = rng.uniform(0.5, 5, len(hkl))
    mr = merge(amap, I, sigma, cell, number, anomalous=True)
    assert isinstance(mr, MergedReflections) and mr.anomalous
    ops = gemmi.find_spacegroup_by_number(number).operations()
    groups: dict[tuple, list[int]] = {}
    for j in range(len(hkl)):
        if ops.is_systematically_absent(hkl[j].tolist()):
            continue
        groups.setdefault(tuple(amap.asu_hkl[j].tolist()), []).append(j)
    assert sorted(groups) == [tuple(h) for h in mr.hkl.tolist()]
    assert not any(ops.is_systematically_absent(h) for h in mr.hkl.tolist())
    uc = gemmi.UnitCell(*cell)
    for row, h in enumerate(mr.hkl.tolist()):
        idx = groups[tuple(h)]

        def wmean(ii):
            if not ii:
                return np.nan, np.nan, 0
            w = 1 / sigma[ii] ** 2
            return (w * I[ii]).sum() / w.sum(), 1 / np.sqrt(w.sum()), len(ii)

        i_all = wmean(idx)
        assert mr.I[row] == pytest.approx(i_all[0]) and mr.sigma[row] == pytest.approx(i_all[1])
        assert mr.n_obs[row] == len(idx)
        assert mr.d_A[row] == pytest.approx(uc.calculate_d(h))
        centric = ops.is_reflection_centric(h)
        assert bool(mr.centric[row]) == centric
        if centric:
            assert mr.I_plus[row] == pytest.approx(i_all[0])
            assert mr.I_minus[row] == pytest.approx(i_all[0])
            assert mr.n_plus[row] == mr.n_minus[row] == len(idx)
            continue
        rasu = gemmi.ReciprocalAsu(gemmi.find_spacegroup_by_number(number))
        plus = [j for j in idx if rasu.to_asu(hkl[j].tolist(), ops)[1] % 2 == 1]
        minus = [j for j in idx if j not in plus]
        for (ev, es, en), got in ((wmean(plus), (mr.I_plus, mr.sig_plus, mr.n_plus)),
                                  (wmean(minus), (mr.I_minus, mr.sig_minus, mr.n_minus))):
            assert got[2][row] == en
            if en:
                assert got[0][row] == pytest.approx(ev) and got[1][row] == pytest.approx(es)
            else:
                assert np.isnan(got[0][row]) and np.isnan(got[1][row])


def test_merge_non_anomalous_has_no_friedel_columns_and_checks_lengths():
    hkl = np.array([[1, 2, 3], [-1, -2, -3], [2, 1, 3], [0, 0, 0]])
    amap = asu_map(hkl, 96)
    mr = merge(amap, np.array([10.0, 20.0, 30.0, 5.0]), np.ones(4), (79, 79, 38, 90, 90, 90), 96)
    assert mr.I_plus is None and not mr.anomalous
    assert len(mr) == 1  # (1,2,3), its Friedel mate and (2,1,3) are equivalent in 422
    assert mr.I[0] == pytest.approx(20.0) and mr.sigma[0] == pytest.approx(1 / np.sqrt(3))
    with pytest.raises(ValueError):
        merge(amap, np.ones(2), np.ones(2), (79, 79, 38, 90, 90, 90), 96)
    with pytest.raises(ValueError):
        merge(amap, np.ones(4), np.ones(4), (79, 79, 38, 90, 90, 90), 19)
