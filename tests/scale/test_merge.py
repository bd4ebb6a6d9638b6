"""ASU mapping and merging (jfx.scale.merge) against gemmi's scalar API and per-reflection loops."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from jfx.scale.merge import (
    AsuMap,
    MergedReflections,
    asu_map,
    d_spacing,
    get_space_group,
    merge,
    merge_intensities,
    to_asu,
)

SPACE_GROUPS = [96, 4, 19, 146, 197, 1, 2, 75, 150, 177, 229]


def _random_hkl(rng, n=400, hmax=7):
    hkl = rng.integers(-hmax, hmax + 1, size=(n, 3))
    return hkl[np.any(hkl != 0, axis=1)]


@pytest.mark.parametrize("number", SPACE_GROUPS)
def test_asu_map_matches_gemmi_row_by_row(number):
    rng = np.random.default_rng(number)
    hkl = _random_hkl(rng)
    sg = gemmi.find_spacegroup_by_number(number)
    ops = sg.operations()
    rasu = gemmi.ReciprocalAsu(sg)
    amap = asu_map(hkl, number, anomalous=True)
    assert isinstance(amap, AsuMap)
    assert amap.space_group == number
    for i, h in enumerate(hkl.tolist()):
        ga, gisym = rasu.to_asu(h, ops)
        assert amap.asu_hkl[i].tolist() == list(ga), (h, amap.asu_hkl[i], ga)
        assert bool(amap.plus[i]) == (gisym % 2 == 1)
        assert rasu.is_in(list(amap.asu_hkl[i]))
        assert bool(amap.absent[i]) == ops.is_systematically_absent(h)
        r = amap.refl[i]
        assert amap.unique_hkl[r].tolist() == list(ga)
        assert bool(amap.centric[r]) == ops.is_reflection_centric(list(ga))
    # unique_hkl sorted and distinct
    u = amap.unique_hkl
    assert len({tuple(x) for x in u.tolist()}) == len(u)
    assert u.tolist() == sorted(u.tolist())
    # isym itself (not only its parity) equals gemmi's
    a2, isym = to_asu(hkl, number)
    assert isym.tolist() == [rasu.to_asu(h, ops)[1] for h in hkl.tolist()]
    assert np.array_equal(a2, amap.asu_hkl)


def test_non_reference_setting_falls_back_to_gemmi():
    sg = gemmi.SpaceGroup("P 1 1 21")  # monoclinic, unique axis c (non-reference setting)
    assert not sg.is_reference_setting()
    rng = np.random.default_rng(3)
    hkl = _random_hkl(rng, 100)
    a, isym = to_asu(hkl, sg)
    rasu = gemmi.ReciprocalAsu(sg)
    for i, h in enumerate(hkl.tolist()):
        ga, gs = rasu.to_asu(h, sg.operations())
        assert a[i].tolist() == list(ga) and isym[i] == gs


@pytest.mark.parametrize("number", [96, 19, 146, 197])
def test_equivalents_and_friedel_mates_share_a_reflection(number):
    """Symmetry equivalents h·R map to one reflection; −h flips the sign for acentrics."""
    rng = np.random.default_rng(10 + number)
    base = _random_hkl(rng, 60)
    sg = gemmi.find_spacegroup_by_number(number)
    rots = [np.asarray(op.rot) // op.DEN for op in sg.operations().sym_ops]
    eq = np.concatenate([base @ r for r in rots])
    fr = -eq
    amap = asu_map(np.concatenate([eq, fr]), number, anomalous=True)
    n = len(base)
    refl = amap.refl.reshape(2 * len(rots), n)
    assert (refl == refl[0]).all()
    plus = amap.plus.reshape(2 * len(rots), n)
    centric = amap.centric[refl[0]]
    acen = ~centric
    # all proper equivalents have the same sign, Friedel mates the opposite one
    assert (plus[: len(rots)][:, acen] == plus[0, acen]).all()
    assert (plus[len(rots):][:, acen] == ~plus[0, acen]).all()
    # refl_anom: 2·refl (+ 1 for I(-) of acentrics)
    ra = amap.refl_anom.reshape(2 * len(rots), n)
    expect = 2 * refl + ((~plus) & ~centric[None, :])
    assert np.array_equal(ra, expect)


def test_space_group_parsing():
    assert get_space_group(96).number == 96
    assert get_space_group("P 43 21 2").number == 96
    assert get_space_group("19").number == 19
    with pytest.raises(ValueError):
        get_space_group(0)
    with pytest.raises(ValueError):
        get_space_group("X 9 9")


def test_d_spacing_matches_gemmi_triclinic():
    cell = (31.2, 42.7, 55.1, 81.0, 97.5, 103.2)
    uc = gemmi.UnitCell(*cell)
    rng = np.random.default_rng(1)
    hkl = _random_hkl(rng, 50)
    d = d_spacing(hkl, cell)
    ref = [uc.calculate_d(h) for h in hkl.tolist()]
    np.testing.assert_allclose(d, ref, rtol=1e-12)


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
