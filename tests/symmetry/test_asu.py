"""ASU mapping and d-spacing (jfx.symmetry.asu) against gemmi's scalar API."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from jfx.symmetry.asu import AsuMap, asu_map, d_spacing, to_asu

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


def test_d_spacing_matches_gemmi_triclinic():
    cell = (31.2, 42.7, 55.1, 81.0, 97.5, 103.2)
    uc = gemmi.UnitCell(*cell)
    rng = np.random.default_rng(1)
    hkl = _random_hkl(rng, 50)
    d = d_spacing(hkl, cell)
    ref = [uc.calculate_d(h) for h in hkl.tolist()]
    np.testing.assert_allclose(d, ref, rtol=1e-12)
