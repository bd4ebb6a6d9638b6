"""Merging statistics (jfx.scale.stats) against hand computations and a per-reflection loop."""

from __future__ import annotations

import math

import gemmi
import numpy as np
import pytest

from jfx.io.report import format_table
from jfx.models.merged import ANOM_COLUMNS, STAT_COLUMNS, MergingStatistics
from jfx.scale.stats import (
    cc_star,
    merging_statistics,
    resolution_shells,
    shell_index,
)
from jfx.symmetry.asu import asu_map

CUBIC10 = (10.0, 10.0, 10.0, 90.0, 90.0, 90.0)


def test_resolution_shells_equal_volume():
    d = np.array([1.5, 2.0, 3.0, 20.0])
    e = resolution_shells(d, 5)
    assert e[0] == 20.0 and e[-1] == 1.5
    assert np.all(np.diff(e) < 0)
    np.testing.assert_allclose(np.diff(e ** -3.0), (1.5 ** -3 - 20.0 ** -3) / 5, rtol=1e-10)
    e2 = resolution_shells(d, 2, d_min=2.0, d_max=10.0)
    np.testing.assert_allclose(e2, [10.0, ((10.0 ** -3 + 2.0 ** -3) / 2) ** (-1 / 3), 2.0])
    j = shell_index(np.array([10.0, 5.0, 2.0, 2.4, 1.9, 11.0]), e2)
    mid = e2[1]
    assert j.tolist() == [0, 0 if 5.0 >= mid else 1, 1, 0 if 2.4 >= mid else 1, -1, -1]
    with pytest.raises(ValueError):
        resolution_shells(d, 0)


def test_cc_star_formula():
    cc = np.array([0.5, 0.9, 1.0, 0.0, -0.2, np.nan])
    got = cc_star(cc)
    np.testing.assert_allclose(got[:3], np.sqrt(2 * cc[:3] / (1 + cc[:3])))
    assert got[1] == pytest.approx(math.sqrt(1.8 / 1.9))
    assert np.isnan(got[3:]).all()


def _hand_dataset():
    # P1, 10 Å cubic cell.  Observations (hkl, I, sigma, half, image):
    rows = [((1, 0, 0), 10.0, 1.0, 0, 0), ((1, 0, 0), 12.0, 1.0, 1, 1),
            ((-1, 0, 0), 14.0, 2.0, 0, 2),                          # Friedel mate of (1,0,0)
            ((0, 1, 0), 20.0, 1.0, 0, 0), ((0, 1, 0), 18.0, 1.0, 1, 1),
            ((0, 0, 1), 30.0, 1.0, 0, 2), ((0, 0, 1), 34.0, 1.0, 1, 3),
            ((1, 1, 0), 5.0, 1.0, 0, 0),
            ((0, 0, 1), 1000.0, 1.0, 1, 9)]                         # image 9: rejected
    hkl = np.array([r[0] for r in rows])
    return (hkl, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
            np.array([r[3] for r in rows]), np.array([r[4] for r in rows]))


def test_hand_computed_statistics():
    hkl, I, sig, half, image = _hand_dataset()
    rej = np.zeros(10, bool)
    rej[9] = True
    ref = {(1, 0, 0): 11.0, (0, 1, 0): 20.0, (0, 0, 1): 30.0, (-1, -1, 0): 6.0}
    amap = asu_map(hkl, 1)
    st = merging_statistics(amap, I, sig, image, half, CUBIC10, 1, n_shells=1, d_min=5.0,
                            d_max=10.0, reference=ref, rejected_image_mask=rej)
    assert isinstance(st, MergingStatistics) and st.n_shells == 1
    for r in (0, 1):  # the single shell equals the overall row
        assert st.d_max[r] == 10.0 and st.d_min[r] == 5.0
        assert st.n_obs[r] == 9  # rejected image still counted (Jungfraujoch convention)
        assert st.n_unique[r] == 4
        assert st.multiplicity[r] == pytest.approx(8 / 4)
        # P1, d >= 5 Å in a 10 Å cube: h²+k²+l² <= 4 gives 6+12+8+6 = 32 indices, 16 unique
        assert st.completeness[r] == pytest.approx(4 / 16)
        ios = [(10 + 12 + 14 / 4) / 2.25 * 1.5, 19 * math.sqrt(2), 32 * math.sqrt(2), 5.0]
        assert st.mean_i_over_sigma[r] == pytest.approx(np.mean(ios))
        h0 = [(10 + 14 / 4) / 1.25, 20.0, 30.0]
        h1 = [12.0, 18.0, 34.0]
        assert st.cc_half[r] == pytest.approx(np.corrcoef(h0, h1)[0, 1])
        assert st.cc_star[r] == pytest.approx(math.sqrt(2 * st.cc_half[r] / (1 + st.cc_half[r])))
        den = 36 + 38 + 64
        assert st.r_meas[r] == pytest.approx((4 * math.sqrt(1.5) + 2 * math.sqrt(2)
                                              + 4 * math.sqrt(2)) / den)
        assert st.r_pim[r] == pytest.approx((4 * math.sqrt(0.5) + 2 + 4) / den)
        merged = [(10 + 12 + 14 / 4) / 2.25, 19.0, 32.0, 5.0]
        assert st.cc_ref[r] == pytest.approx(np.corrcoef(merged, [11, 20, 30, 6])[0, 1])
        assert np.isnan(st.cc_anom[r])
    assert st.n_rejected_images == 1
    tab = st.as_table()
    assert list(tab) == [c for c in STAT_COLUMNS if c != "cc_anom" and c not in ANOM_COLUMNS]
    assert (st.n_anom_pairs == 0).all() and np.isnan(st.dano_over_sigma).all()
    assert all(len(v) == 2 for v in tab.values())
    rec = st.as_records()
    assert rec.dtype.names == tuple(tab) and rec["n_unique"][1] == 4
    assert rec["r_pim"][0] == st.r_pim[0]
    text = format_table(st)
    assert "CCref" in text and "CCano" not in text and "overall" in text and "Wilson B" in text
    assert "Anomalous statistics" not in text and "AnoCmp" not in text


def test_hand_computed_anomalous():
    # P1: three acentric reflections, each with I(+) and I(-) in both halves.
    dplus0, dplus1 = [1.0, 2.0, 3.0], [1.5, 1.8, 3.5]
    base = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    rows = []
    for k, h in enumerate(base):
        mh = tuple(-x for x in h)
        rows += [(h, 100.0 + dplus0[k], 0), (mh, 100.0, 0),
                 (h, 100.0 + dplus1[k], 1), (mh, 100.0, 1)]
    hkl = np.array([r[0] for r in rows])
    I = np.array([r[1] for r in rows])
    half = np.array([r[2] for r in rows])
    amap = asu_map(hkl, 1, anomalous=True)
    st = merging_statistics(amap, I, np.ones(len(I)), None, half, CUBIC10, 1, anomalous=True,
                            n_shells=1, d_min=5.0, d_max=10.0)
    # ΔI = I(+) − I(−) with I(+) the index inside the ASU (in P1 the CCP4 ASU holds (1,0,0),
    # (0,1,0) and (0,0,1), so sgn = +1; computed with gemmi rather than assumed).
    sgn = [1 if gemmi.ReciprocalAsu(gemmi.SpaceGroup("P 1")).is_in(list(h)) else -1
           for h in base]
    e0 = [s * d for s, d in zip(sgn, dplus0)]
    e1 = [s * d for s, d in zip(sgn, dplus1)]
    assert st.cc_anom[0] == pytest.approx(np.corrcoef(e0, e1)[0, 1])
    assert st.n_unique[0] == 6  # I(+) and I(-) counted separately
    assert st.completeness[0] == pytest.approx(6 / 32)
    assert st.multiplicity[0] == pytest.approx(2.0)
    assert "cc_anom" in st.as_table() and "cc_ref" not in st.as_table()
    assert "CCano" in format_table(st)
    # three Bijvoet pairs, each I(±) of 2 observations
    assert st.n_anom_pairs[0] == 3 and st.anom_multiplicity[0] == pytest.approx(2.0)
    dI = [100.0 + (a + b) / 2 - 100.0 for a, b in zip(dplus0, dplus1)]
    assert st.dano_over_sigma[0] == pytest.approx(np.mean(np.abs(dI)) / math.sqrt(0.5 + 0.5))


P222 = (10.0, 12.0, 14.0, 90.0, 90.0, 90.0)


def _anomalous_dataset():
    """P222 Friedel halves with known observations: (ASU hkl, sign, [(I, σ)…]).  '+' is the ASU
    index itself, '−' its negation.  (1,1,0) is centric (hk0 zone); (2,1,1) lacks I(−),
    (1,1,2) lacks I(+)."""
    return [((1, 1, 1), "+", [(110.0, 1.0), (112.0, 1.0)]),
            ((1, 1, 1), "-", [(100.0, 1.0), (98.0, 2.0), (102.0, 2.0)]),
            ((1, 2, 1), "+", [(50.0, 1.0)]),
            ((1, 2, 1), "-", [(40.0, 1.0), (44.0, 1.0)]),
            ((2, 1, 1), "+", [(30.0, 1.0), (31.0, 1.0)]),
            ((1, 1, 2), "-", [(20.0, 1.0)]),
            ((1, 1, 0), "+", [(60.0, 1.0), (62.0, 1.0)]),
            ((1, 1, 0), "-", [(61.0, 1.0)]),
            ((2, 2, 1), "+", [(80.0, 1.0)]),
            ((2, 2, 1), "-", [(81.0, 1.0)])]


def test_anomalous_statistics_by_hand():
    """Bijvoet pairs, anomalous completeness and multiplicity, <|ΔI|/σ(ΔI)> and R_anom of a
    dataset small enough to work out by hand (a centric reflection and missing mates)."""
    sg = gemmi.SpaceGroup("P 2 2 2")
    rasu = gemmi.ReciprocalAsu(sg)
    rows = []
    for h, sign, obs in _anomalous_dataset():
        assert rasu.is_in(list(h))
        idx = h if sign == "+" else tuple(-x for x in h)
        rows += [(idx, i, s) for i, s in obs]
    hkl = np.array([r[0] for r in rows])
    I = np.array([r[1] for r in rows])
    sig = np.array([r[2] for r in rows])
    amap = asu_map(hkl, 16, anomalous=True)
    st = merging_statistics(amap, I, sig, None, np.arange(len(I)) % 2, P222, 16,
                            anomalous=True, n_shells=1, d_max=20.0, d_min=3.0)
    # weighted means: (1,1,1) I+ = 111 (σ² 1/2), I− = (100 + 98/4 + 102/4)/1.5 = 100 (σ² 2/3);
    # (1,2,1) I+ = 50 (σ² 1), I− = 42 (σ² 1/2); (2,2,1) 80 and 81 (σ² 1, 1)
    ratios = [11 / math.sqrt(1 / 2 + 2 / 3), 8 / math.sqrt(1.5), 1 / math.sqrt(2.0)]
    # possible acentric ASU reflections (h, k, l all non-zero in P222) with 3 <= d <= 20 Å
    uc = gemmi.UnitCell(*P222)
    n_acen = sum(1 for h in gemmi.make_miller_array(uc, sg, 3.0 * (1 - 1e-9), 20.0)
                 if not sg.operations().is_reflection_centric(list(h))
                 and 3.0 <= uc.calculate_d(list(h)) <= 20.0)
    assert n_acen > 3
    for r in (0, 1):
        assert st.n_anom_pairs[r] == 3
        assert st.anom_completeness[r] == pytest.approx(3 / n_acen)
        # acentric halves measured: 2, 3, 1, 2, 2, 1, 1, 1 observations (the centric
        # (1,1,0) is not counted)
        assert st.anom_multiplicity[r] == pytest.approx(13 / 8)
        assert st.dano_over_sigma[r] == pytest.approx(np.mean(ratios))
        assert st.r_anom[r] == pytest.approx((11 + 8 + 1) / (0.5 * (211 + 92 + 161)))
        assert np.isnan(st.cc_anom[r])  # fewer than 3 pairs in both halves
        # the table units: 10 (reflection, sign) units, centric once
        assert st.n_unique[r] == 9
    text = format_table(st)
    main, anom = text.split("Anomalous statistics")
    assert "CC1/2%" in main and "CCano" not in main and "CCano%" in anom
    anom_lines = text[text.index("Anomalous statistics"):].splitlines()
    last = next(ln for ln in anom_lines if ln.strip().startswith("overall")).split()
    assert last[1:] == ["3", f"{100 * 3 / n_acen:.1f}", f"{13 / 8:.2f}", "-",
                        f"{100 * 20 / 232:.1f}", f"{np.mean(ratios):.3f}"]
    rec = st.as_records()
    assert rec.dtype["n_anom_pairs"] == np.int64 and rec["n_anom_pairs"][-1] == 3
    assert rec["dano_over_sigma"][-1] == st.dano_over_sigma[-1]


# ---------------------------------------------------------------------------------------------
# independent per-reflection implementation (gemmi scalar API + python loops)
# ---------------------------------------------------------------------------------------------

def _pearson(a, b):
    if len(a) < 3:
        return np.nan
    a, b = np.asarray(a), np.asarray(b)
    if a.std() == 0 or b.std() == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])


def _wmean(obs):
    w = np.array([1 / s ** 2 for _, s in obs])
    v = np.array([i for i, _ in obs])
    return (w * v).sum() / w.sum(), 1 / math.sqrt(w.sum())


def _loop_statistics(hkl, I, sig, half, image, rej, cell, number, anomalous, n_shells, ref):
    sg = gemmi.find_spacegroup_by_number(number)
    ops = sg.operations()
    rasu = gemmi.ReciprocalAsu(sg)
    uc = gemmi.UnitCell(*cell)
    units: dict = {}
    per_refl: dict = {}
    ds = []
    keep_rows = []
    for j in range(len(hkl)):
        h = hkl[j].tolist()
        if ops.is_systematically_absent(h) or not sig[j] > 0:
            continue
        a, isym = rasu.to_asu(h, ops)
        a = tuple(a)
        centric = ops.is_reflection_centric(list(a))
        sign = "+" if (centric or isym % 2 == 1) else "-"
        keep_rows.append((j, a, sign))
        ds.append(uc.calculate_d(list(a)))
    dmin, dmax = min(ds), max(ds)
    s3 = [dmax ** -3 + (dmin ** -3 - dmax ** -3) * t / n_shells for t in range(n_shells + 1)]

    def shell(d):
        x = d ** -3
        for t in range(n_shells):
            if s3[t] - 1e-12 <= x < s3[t + 1] or (t == n_shells - 1 and abs(x - s3[-1]) < 1e-12):
                return t
        return -1

    n_obs = np.zeros(n_shells + 1, int)
    for j, a, sign in keep_rows:
        sh = shell(uc.calculate_d(list(a)))
        n_obs[sh] += 1
        n_obs[-1] += 1
        if rej[image[j]]:
            continue
        key = (a, sign) if anomalous else (a,)
        units.setdefault(key, []).append((I[j], sig[j], half[j]))
        per_refl.setdefault(a, []).append((I[j], sig[j], half[j], sign))
    # possible reflections
    possible = np.zeros(n_shells + 1)
    possible_acentric = np.zeros(n_shells + 1)
    hm = int(cell[0] / dmin) + 1
    seen = set()
    for h in range(-hm, hm + 1):
        for k in range(-hm, hm + 1):
            for l in range(-hm, hm + 1):
                if (h, k, l) == (0, 0, 0) or ops.is_systematically_absent([h, k, l]):
                    continue
                d = uc.calculate_d([h, k, l])
                if d < dmin * (1 - 1e-12):
                    continue
                a = tuple(rasu.to_asu([h, k, l], ops)[0])
                if a in seen:
                    continue
                seen.add(a)
                w = 2 if anomalous and not ops.is_reflection_centric(list(a)) else 1
                possible[shell(d)] += w
                possible[-1] += w
                if not ops.is_reflection_centric(list(a)):
                    possible_acentric[shell(d)] += 1
                    possible_acentric[-1] += 1
    out = {c: np.full(n_shells + 1, np.nan) for c in STAT_COLUMNS}
    out["n_obs"] = n_obs
    out["n_anom_pairs"] = np.zeros(n_shells + 1, int)
    for row in range(n_shells + 1):
        def in_row(a, row=row):
            return row == n_shells or shell(uc.calculate_d(list(a))) == row
        sel = [k for k in units if in_row(k[0])]
        nu = len(sel)
        out.setdefault("n_unique", np.zeros(n_shells + 1, int))[row] = nu
        nused = sum(len(units[k]) for k in sel)
        if nu:
            out["multiplicity"][row] = nused / nu
            out["mean_i_over_sigma"][row] = np.mean(
                [_wmean([(i, s) for i, s, _ in units[k]])[0]
                 / _wmean([(i, s) for i, s, _ in units[k]])[1] for k in sel])
        out["completeness"][row] = nu / possible[row]
        x0, x1 = [], []
        num_m = num_p = den = 0.0
        for k in sel:
            o0 = [(i, s) for i, s, hh in units[k] if hh == 0]
            o1 = [(i, s) for i, s, hh in units[k] if hh == 1]
            if o0 and o1:
                x0.append(_wmean(o0)[0])
                x1.append(_wmean(o1)[0])
            n = len(units[k])
            if n >= 2:
                vals = [i for i, _, _ in units[k]]
                mbar = sum(vals) / n
                dev = sum(abs(v - mbar) for v in vals)
                num_m += math.sqrt(n / (n - 1)) * dev
                num_p += math.sqrt(1 / (n - 1)) * dev
                den += sum(vals)
        out["cc_half"][row] = _pearson(x0, x1)
        c = out["cc_half"][row]
        out["cc_star"][row] = math.sqrt(2 * c / (1 + c)) if c > 0 else np.nan
        if den:
            out["r_meas"][row] = num_m / den
            out["r_pim"][row] = num_p / den
        if anomalous:
            a0, a1 = [], []
            for a, obs in per_refl.items():
                if not in_row(a) or ops.is_reflection_centric(list(a)):
                    continue
                parts = {(sg_, hh): [(i, s) for i, s, h2, sg2 in obs if h2 == hh and sg2 == sg_]
                         for sg_ in "+-" for hh in (0, 1)}
                if all(parts.values()):
                    a0.append(_wmean(parts["+", 0])[0] - _wmean(parts["-", 0])[0])
                    a1.append(_wmean(parts["+", 1])[0] - _wmean(parts["-", 1])[0])
            out["cc_anom"][row] = _pearson(a0, a1)
            # Bijvoet pairs from the full merges of each Friedel half
            npairs, halves, ratios, num, den_a = 0, [], [], 0.0, 0.0
            for a, obs in per_refl.items():
                if not in_row(a) or ops.is_reflection_centric(list(a)):
                    continue
                plus = [(i, s) for i, s, _, sg2 in obs if sg2 == "+"]
                minus = [(i, s) for i, s, _, sg2 in obs if sg2 == "-"]
                halves += [len(x) for x in (plus, minus) if x]
                if plus and minus:
                    (ip, sp), (im, sm) = _wmean(plus), _wmean(minus)
                    npairs += 1
                    ratios.append(abs(ip - im) / math.sqrt(sp ** 2 + sm ** 2))
                    num += abs(ip - im)
                    den_a += 0.5 * (ip + im)
            out["n_anom_pairs"][row] = npairs
            out["anom_completeness"][row] = npairs / possible_acentric[row]
            out["anom_multiplicity"][row] = np.mean(halves) if halves else np.nan
            out["dano_over_sigma"][row] = np.mean(ratios) if ratios else np.nan
            out["r_anom"][row] = num / den_a if npairs and den_a > 0 else np.nan
        if ref is not None:
            xm, xr = [], []
            for a, obs in per_refl.items():
                if in_row(a) and a in ref:
                    xm.append(_wmean([(i, s) for i, s, _, _ in obs])[0])
                    xr.append(ref[a])
            out["cc_ref"][row] = _pearson(xm, xr)
    return out


@pytest.mark.parametrize("number,anomalous", [(19, True), (96, False), (146, True)])
def test_statistics_match_per_reflection_loop(number, anomalous):
    sgobj = gemmi.find_spacegroup_by_number(number)
    cell = {19: (21.0, 24.0, 27.0, 90, 90, 90), 96: (24.0, 24.0, 30.0, 90, 90, 90),
            146: (25.0, 25.0, 22.0, 90, 90, 120)}[number]
    rng = np.random.default_rng(number)
    base = np.asarray(gemmi.make_miller_array(gemmi.UnitCell(*cell), sgobj, 4.0))
    truth = rng.exponential(100.0, len(base))
    rots = [np.asarray(op.rot) // op.DEN for op in sgobj.operations().sym_ops]
    n = 1500
    pick = rng.integers(0, len(base), n)
    hkl = np.empty((n, 3), int)
    which = rng.integers(0, len(rots), n)
    for t, r in enumerate(rots):
        hkl[which == t] = base[pick[which == t]] @ r
    hkl *= rng.choice([-1, 1], n)[:, None]
    hkl[:10] = [0, 0, 1]  # some absent in 19 (00l, l odd) / fine elsewhere
    sig = rng.uniform(2.0, 8.0, n)
    I = truth[pick] * (1 + 0.1 * np.sign(hkl.sum(axis=1))) + rng.normal(size=n) * sig
    image = rng.integers(0, 40, n)
    half = image % 2
    rej = np.zeros(40, bool)
    rej[[3, 17]] = True
    ref_pairs = (base[::2], truth[::2] * 1.3 + 5)
    amap = asu_map(hkl, number, anomalous)
    st = merging_statistics(amap, I, sig, image, half, cell, number, anomalous=anomalous,
                            n_shells=3, reference=ref_pairs, rejected_image_mask=rej)
    rasu = gemmi.ReciprocalAsu(sgobj)
    ref = {}
    for h, v in zip(*ref_pairs):
        ref[tuple(rasu.to_asu(h.tolist(), sgobj.operations())[0])] = v
    exp = _loop_statistics(hkl, I, sig, half, image, rej, cell, number, anomalous, 3, ref)
    for c in STAT_COLUMNS:
        if c in ("d_max", "d_min"):
            continue
        np.testing.assert_allclose(getattr(st, c), exp[c], rtol=1e-9, atol=1e-12, err_msg=c)
    assert st.overall("completeness") > 0.5
    if anomalous:
        assert np.isfinite(st.cc_anom[-1]) and st.n_anom_pairs[-1] > 20
        assert np.isfinite(st.dano_over_sigma[:-1]).all() and 0 < st.anom_completeness[-1] <= 1


def test_wilson_b_recovered():
    number, cell, b_true = 96, (40.0, 40.0, 60.0, 90, 90, 90), 25.0
    sg = gemmi.find_spacegroup_by_number(number)
    hkl = np.asarray(gemmi.make_miller_array(gemmi.UnitCell(*cell), sg, 1.8))
    d = np.array([gemmi.UnitCell(*cell).calculate_d(h) for h in hkl.tolist()])
    eps = np.asarray(sg.operations().epsilon_factor_without_centering_array(hkl), float)
    rng = np.random.default_rng(0)
    # acentric Wilson distribution around <I> = ε K exp(-B/(2d²))
    I = eps * 1e4 * np.exp(-b_true / (2 * d ** 2)) * rng.exponential(1.0, len(hkl))
    amap = asu_map(hkl, number)
    st = merging_statistics(amap, I, np.sqrt(I + 1.0), None, np.arange(len(hkl)) % 2, cell,
                            number, n_shells=8)
    assert st.wilson_b_A2 == pytest.approx(b_true, abs=1.0)
    assert st.overall("completeness") == pytest.approx(1.0)
    assert f"{st.wilson_b_A2:.2f}" in format_table(st)


def test_bad_arguments():
    hkl, I, sig, half, image = _hand_dataset()
    amap = asu_map(hkl, 1)
    with pytest.raises(ValueError):
        merging_statistics(amap, I[:-1], sig, image, half, CUBIC10, 1)
    with pytest.raises(ValueError):
        merging_statistics(amap, I, sig, image, half, CUBIC10, 2)
    with pytest.raises(ValueError):
        merging_statistics(amap, I, sig, None, half, CUBIC10, 1,
                           rejected_image_mask=np.zeros(10, bool))
    with pytest.raises(ValueError):
        merging_statistics(amap, I, sig, image, half, CUBIC10, 1,
                           rejected_image_mask=np.zeros(3, bool))
