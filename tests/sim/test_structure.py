"""Structure factors: direct numpy sum vs gemmi, absences, Friedel/Bijvoet pairs."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.sim import structure as S


@pytest.mark.parametrize(
    "sg,cell",
    [(96, (30.0, 30.0, 40.0, 90, 90, 90)), (4, (30.0, 35.0, 40.0, 90, 105, 90)),
     (5, (30.0, 35.0, 40.0, 90, 105, 90))],
)
def test_numpy_sum_matches_gemmi(sg, cell):
    atoms = S.random_atoms(6, seed=2, n_heavy=1, heavy_element="Se")
    hkl, _ = S.all_hkl(cell, 4.0)
    hkl = hkl[np.random.default_rng(0).choice(len(hkl), 150, replace=False)]
    f_gm = S.structure_factors_gemmi(atoms, sg, cell, hkl)
    for fast in (False, True):
        f_np = S.structure_factors_numpy(atoms, sg, cell, hkl, fast=fast)
        scale = np.max(np.abs(f_np))
        assert np.max(np.abs(f_np - f_gm)) < 1e-5 * scale


def test_all_hkl_complete_and_within_resolution():
    cell = (30.0, 35.0, 40.0, 90, 105, 90)
    hkl, d = S.all_hkl(cell, 3.0)
    assert np.all(d >= 3.0 - 1e-9)
    # brute force over a generous box
    astar = S.reciprocal_metric(cell)
    r = np.arange(-20, 21)
    H = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    q2 = np.sum((H @ astar) ** 2, -1)
    assert np.sum((q2 > 0) & (q2 <= 1 / 9.0)) == len(hkl)


def test_systematic_absences_p43212():
    cell = (30.0, 30.0, 40.0, 90, 90, 90)
    atoms = S.random_atoms(10, seed=5)
    absent = np.array([[0, 0, l] for l in (1, 2, 3, 5, 6, 7)] + [[h, 0, 0] for h in (1, 3, 5)])
    present = np.array([[0, 0, 4], [0, 0, 8], [2, 0, 0], [4, 0, 0], [1, 2, 3]])
    f_abs = S.structure_factors_numpy(atoms, 96, cell, absent)
    f_pre = S.structure_factors_numpy(atoms, 96, cell, present)
    assert np.max(np.abs(f_abs) ** 2) < 1e-18 * np.mean(np.abs(f_pre) ** 2)
    assert S.systematic_absences(absent, 96).all()
    assert not S.systematic_absences(present, 96).any()
    sf = S.compute_intensities(atoms, cell, 96, 5.0)
    looked = sf.lookup(absent)
    assert np.all(looked == 0.0)
    assert np.all(sf.lookup(present[:4]) > 0)


def test_friedel_and_bijvoet_and_symmetry_expansion():
    cell = (30.0, 30.0, 40.0, 90, 90, 90)
    light = S.random_atoms(12, seed=7, n_heavy=2, heavy_element="Se")
    e = S.HC_KEV_A / 0.9795  # Se K edge: f'' ≈ 3.8 e
    sf0 = S.compute_intensities(light, cell, 96, 4.0)
    sfa = S.compute_intensities(light, cell, 96, 4.0, energy_keV=e)
    assert not sf0.anomalous and sfa.anomalous
    ok = sf0.i_true > 0
    pick = np.random.default_rng(1).choice(np.flatnonzero(ok), 60, replace=False)
    h = sf0.hkl[pick]
    # direct float64 sums: Friedel's law without f'', Bijvoet differences with it
    i_p = np.abs(S.structure_factors_numpy(light, 96, cell, h)) ** 2
    i_m = np.abs(S.structure_factors_numpy(light, 96, cell, -h)) ** 2
    np.testing.assert_allclose(i_p, i_m, rtol=1e-10)
    a_p = np.abs(S.structure_factors_numpy(light, 96, cell, h, energy_keV=e)) ** 2
    a_m = np.abs(S.structure_factors_numpy(light, 96, cell, -h, energy_keV=e)) ** 2
    assert np.median(np.abs(a_p - a_m) / (a_p + a_m)) > 1e-3
    # the expanded tables (orbit representatives, float32 trig) reproduce the direct sums
    tol = dict(rtol=1e-4, atol=1e-5 * np.mean(i_p))
    np.testing.assert_allclose(sf0.i_true[pick], i_p, **tol)
    np.testing.assert_allclose(sf0.lookup(-h), i_m, **tol)
    np.testing.assert_allclose(sfa.i_true[pick], a_p, **tol)
    np.testing.assert_allclose(sfa.lookup(-h), a_m, **tol)


def test_merged_asu_covers_all_unique():
    cell = (30.0, 35.0, 40.0, 90, 105, 90)
    atoms = S.random_atoms(8, seed=3)
    sf = S.compute_intensities(atoms, cell, 4, 4.0)
    m = sf.merged()
    # P2 point group 2/m (Laue) has order 4 → unique ≈ N/4 (plus special zones)
    assert len(m["hkl"]) > len(sf.hkl) / 4.5
    np.testing.assert_allclose(m["i_plus"], m["i_minus"], rtol=1e-10)
    assert np.all(m["i_plus"][m["absent"]] == 0)


def test_model_file_roundtrip(tmp_path):
    import gemmi

    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(30, 35, 40, 90, 90, 90)
    st.spacegroup_hm = "P 21 21 21"
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    rng = np.random.default_rng(4)
    for i in range(5):
        res = gemmi.Residue()
        res.name = "GLY"
        res.seqid = gemmi.SeqId(i + 1, " ")
        a = gemmi.Atom()
        a.name = "CA"
        a.element = gemmi.Element("C")
        a.pos = gemmi.Position(*(rng.random(3) * [30, 35, 40]))
        a.b_iso = 20.0
        a.occ = 1.0
        res.add_atom(a)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    path = tmp_path / "m.pdb"
    st.write_pdb(str(path))
    sf = S.intensities_from_model(path, 5.0)
    st2 = gemmi.read_structure(str(path))
    fr = np.array([st2.cell.fractionalize(r[0].pos).tolist() for r in st2[0]["A"]])
    atoms = S.AtomSet(("C",) * 5, fr, np.full(5, 20.0), np.ones(5))
    direct = np.abs(S.structure_factors_numpy(atoms, 19, (30, 35, 40, 90, 90, 90), sf.hkl)) ** 2
    np.testing.assert_allclose(sf.i_true, np.where(sf.i_true == 0, 0, direct), rtol=2e-4,
                               atol=1e-4 * direct.max())
    with pytest.raises(ValueError):
        S.intensities_from_model(tmp_path / "missing.pdb", 5.0)
