"""Tests for jfx.symmetry.bravais and jfx.symmetry.niggli: Niggli reduction, Bravais search,
symmetrisation, cell matching.

Independent expectations: lattices are generated from known conventional cells (standard
settings), turned into scrambled primitive bases by hand-written centring matrices and random
unimodular matrices; the answers are checked against the generating cell, against gemmi's
own Niggli reduction, and (for the |n| ≤ 2 search range) against a brute-force |n| ≤ 3 search.
"""

from __future__ import annotations

import itertools

import gemmi
import numpy as np
import pytest

from jfx.models.lattice import basis_to_cell, cell_to_basis
from jfx.symmetry import bravais as br
from jfx.symmetry import groups, niggli

# Primitive cells of centred lattices, rows in conventional fractional coordinates
# (written out here independently of the module).
PRIM = {
    "P": np.eye(3),
    "C": np.array([[0.5, 0.5, 0.0], [-0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]),
    "I": np.array([[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]]),
    "F": np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]),
    "R": np.array([[2.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [-1.0, -2.0, 1.0]]) / 3.0,
}
MULT = {"P": 1, "C": 2, "I": 2, "F": 4, "R": 3}

# One standard-setting cell per Bravais type (+ the brief's protein examples).
CASES = [
    ("aP", (50.0, 60.0, 70.0, 80.0, 95.0, 105.0)),
    ("mP", (50.0, 60.0, 70.0, 90.0, 105.0, 90.0)),
    ("mC", (120.0, 60.0, 50.0, 90.0, 110.0, 90.0)),
    ("oP", (40.0, 50.0, 60.0, 90.0, 90.0, 90.0)),
    ("oC", (40.0, 60.0, 70.0, 90.0, 90.0, 90.0)),
    ("oI", (40.0, 50.0, 60.0, 90.0, 90.0, 90.0)),
    ("oF", (40.0, 50.0, 60.0, 90.0, 90.0, 90.0)),
    ("tP", (79.1, 79.1, 38.0, 90.0, 90.0, 90.0)),
    ("tI", (60.0, 60.0, 90.0, 90.0, 90.0, 90.0)),
    ("hP", (93.0, 93.0, 130.0, 90.0, 90.0, 120.0)),
    ("hR", (80.0, 80.0, 120.0, 90.0, 90.0, 120.0)),
    ("hR", (40.0, 40.0, 150.0, 90.0, 90.0, 120.0)),    # prolate: long 3-fold axis
    ("cP", (50.0, 50.0, 50.0, 90.0, 90.0, 90.0)),
    ("cI", (50.0, 50.0, 50.0, 90.0, 90.0, 90.0)),
    ("cF", (50.0, 50.0, 50.0, 90.0, 90.0, 90.0)),
    ("mP", (45.0, 35.0, 90.0, 90.0, 98.0, 90.0)),
    ("mC", (100.0, 45.0, 60.0, 90.0, 115.0, 90.0)),
]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def random_unimodular(rng: np.random.Generator, bound: int = 2) -> np.ndarray:
    """Random integer matrix with det ±1 and entries in [-bound, bound] (product of shears)."""
    while True:
        S = np.eye(3, dtype=np.int64)
        for _ in range(int(rng.integers(3, 8))):
            E = np.eye(3, dtype=np.int64)
            i, j = rng.choice(3, 2, replace=False)
            E[i, j] = rng.choice([-1, 1])
            S = E @ S
        if rng.random() < 0.5:
            S[0] *= -1          # also left-handed inputs
        if np.abs(S).max() <= bound and np.abs(S).max() >= 2:
            return S


def strain(rng: np.random.Generator, rel: float) -> np.ndarray:
    """I + E with E symmetric random, entries ~ rel: a lattice-level metric error."""
    E = rng.normal(0.0, rel, (3, 3))
    return np.eye(3) + 0.5 * (E + E.T)


def lattice(cell, centring: str, rng: np.random.Generator, noise: float = 0.0):
    """(conventional basis (3, 3), scrambled primitive basis (3, 3)) of a rotated lattice."""
    conv = cell_to_basis(np.asarray(cell, dtype=np.float64)) @ random_rotation(rng).T
    if noise:
        conv = conv @ strain(rng, noise)
    prim = random_unimodular(rng) @ PRIM[centring] @ conv
    return conv, prim


def centring_letter(symbol: str) -> str:
    return symbol[1]


def assert_same_lattice(setting: br.Setting, prim: np.ndarray, conv_true: np.ndarray,
                        cell=None) -> None:
    """Setting basis spans the generating lattice: integer transform of the input basis with
    the right centring, and an integer unimodular matrix away from the true conventional cell."""
    T = setting.transform
    assert np.issubdtype(T.dtype, np.integer)
    np.testing.assert_allclose(T @ prim, setting.basis, atol=1e-9)
    X = np.linalg.solve(prim.T, setting.basis.T).T        # setting = X @ prim, independently
    np.testing.assert_allclose(X, np.rint(X), atol=1e-6)
    mult = MULT[centring_letter(setting.bravais)]
    assert round(abs(np.linalg.det(X))) == mult
    # Rows of X⁻¹ (the input lattice in conventional coordinates) mod 1 = centring vectors.
    frac = np.mod(np.linalg.inv(X) @ np.eye(3), 1.0)
    frac = np.where(np.isclose(frac, 1.0, atol=1e-6), 0.0, frac)
    allowed = {"P": [(0, 0, 0)], "C": [(0, 0, 0), (0.5, 0.5, 0)],
               "I": [(0, 0, 0), (0.5, 0.5, 0.5)],
               "F": [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)],
               "R": [(0, 0, 0), (2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)]}
    for row in frac:
        assert any(np.allclose(row, v, atol=1e-6) for v in allowed[centring_letter(
            setting.bravais)]), (setting.bravais, frac)
    # Same conventional sublattice as the generating cell: a point-group operation.
    Y = np.linalg.solve(conv_true.T, setting.basis.T).T
    np.testing.assert_allclose(Y, np.rint(Y), atol=0.02)
    assert round(abs(np.linalg.det(np.rint(Y)))) == 1
    if cell is not None:
        # ... and that operation is a symmetry of the ideal metric: the setting found is the
        # generating standard setting up to the lattice's point group (permutation-correct).
        G0 = cell_to_basis(np.asarray(cell, dtype=np.float64))
        G0 = G0 @ G0.T
        Yi = np.rint(Y)
        np.testing.assert_allclose(Yi @ G0 @ Yi.T, G0, rtol=1e-9, atol=1e-9 * G0.max())
    assert np.linalg.det(setting.basis) > 0


@pytest.mark.parametrize("symbol,cell", CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(CASES)])
def test_best_setting_recovers_every_bravais_type(symbol, cell):
    rng = np.random.default_rng(abs(hash((symbol, cell))) % 2**32)
    for _ in range(3):
        conv, prim = lattice(cell, centring_letter(symbol), rng, noise=0.001)
        s = br.best_setting(prim)
        assert s.bravais == symbol, br.conventional_settings(prim)
        if symbol == "aP":
            g = gemmi.GruberVector(gemmi.UnitCell(*basis_to_cell(prim)), "P")
            g.niggli_reduce()
            np.testing.assert_allclose(s.cell, g.cell_parameters(), rtol=1e-9, atol=1e-7)
        else:
            # within 0.5 % / 0.5° of the unstrained cell, in the same (standard) setting
            np.testing.assert_allclose(s.cell[:3], np.asarray(cell)[:3], rtol=5e-3)
            np.testing.assert_allclose(s.cell[3:], np.asarray(cell)[3:], atol=0.5)
            assert_same_lattice(s, prim, conv, cell)
        assert s.deviation_len <= 0.03 and s.deviation_deg <= 3.0
        assert s.deviation_len < 0.01 and s.deviation_deg < 0.5


def test_body_centred_monoclinic_is_returned_in_the_c_setting():
    """Niggli class 43 (mI): an I2 cell comes back as the standard C2 cell."""
    rng = np.random.default_rng(7)
    cell_I = np.array([50.0, 60.0, 55.0, 90.0, 100.0, 90.0])
    conv_I = cell_to_basis(cell_I) @ random_rotation(rng).T
    prim = random_unimodular(rng) @ PRIM["I"] @ conv_I
    a, b, c = conv_I
    # Expected C cell: a' = a + c (the shorter of a ± c), c' = the shortest net vector (a),
    # signed for β ≥ 90°.
    a2 = a + c
    c2 = a if a2 @ a < 0 else -a
    expected = basis_to_cell(np.array([a2, b, c2]))
    s = br.best_setting(prim)
    assert s.bravais == "mC"
    np.testing.assert_allclose(s.cell, expected, rtol=1e-9, atol=1e-7)
    assert expected[4] > 90.0
    # and the C cell spans the I lattice
    X = np.linalg.solve(prim.T, s.basis.T).T
    np.testing.assert_allclose(X, np.rint(X), atol=1e-9)
    assert round(abs(np.linalg.det(X))) == 2


def test_random_lattices_every_type_found_with_shortest_cell():
    """Random cells of every centred type: the |n| ≤ 2 search finds the type, and the cell is as
    short (a + b + c) as the best one of a brute-force |n| ≤ 3 search."""
    rng = np.random.default_rng(11)
    n3 = np.array([v for v in itertools.product(range(-3, 4), repeat=3) if any(v)])
    for it in range(36):
        symbol = ["mC", "mI", "oC", "oI", "oF", "tI", "hR", "cI", "cF", "mP", "oP", "hP"][it % 12]
        a, b, c = rng.uniform(20.0, 200.0, 3)
        cell = {"m": (a, b, c, 90.0, rng.uniform(91.0, 135.0), 90.0),
                "o": (a, b, c, 90.0, 90.0, 90.0), "t": (a, a, c, 90.0, 90.0, 90.0),
                "h": (a, a, c, 90.0, 90.0, 120.0), "c": (a, a, a, 90.0, 90.0, 90.0)}[symbol[0]]
        centring = symbol[1]
        expect = "mC" if symbol == "mI" else symbol
        _, prim = lattice(cell, centring, rng)
        found = {s.bravais: s for s in br.conventional_settings(prim, 1e-3, 0.01)}
        assert expect in found, (symbol, cell, list(found))
        s = found[expect]
        assert round(abs(np.linalg.det(s.transform))) == MULT[expect[1]]
        if expect in ("mC", "oI", "oF", "tI", "hR"):
            # brute force over |n| ≤ 3 vectors of the lattice: shortest conventional cell
            V = n3 @ prim
            L = np.linalg.norm(V, axis=1)
            best = np.inf
            perp = np.abs(V @ V.T) / np.outer(L, L) < 1e-7
            for i, j in zip(*np.nonzero(perp)):
                for k in np.flatnonzero(perp[j] if expect == "mC" else perp[i] & perp[j]):
                    T = np.array([n3[i], n3[j], n3[k]])
                    d = round(abs(np.linalg.det(T)))
                    if d != MULT[expect[1]] or k in (i, j):
                        continue
                    X = np.linalg.inv(T)                  # input lattice in that cell
                    frac = np.mod(np.rint(X * d) / d, 1.0)
                    want = {"mC": {(0, 0, 0), (0.5, 0.5, 0)}, "oI": {(0, 0, 0), (0.5, 0.5, 0.5)},
                            "tI": {(0, 0, 0), (0.5, 0.5, 0.5)},
                            "oF": {(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)}}
                    if expect == "hR":
                        continue
                    if not {tuple(r) for r in frac} <= want[expect]:
                        continue
                    if expect == "tI" and not (abs(L[i] - L[j]) < 1e-6 * L[i]):
                        continue
                    best = min(best, L[i] + L[j] + L[k])
            if expect != "hR":
                assert s.cell[:3].sum() <= best * (1 + 1e-9), (symbol, s.cell, best)
            else:
                np.testing.assert_allclose(s.cell, cell, rtol=1e-9, atol=1e-7)


def test_protein_examples():
    rng = np.random.default_rng(3)
    for symbol, cell in [("tP", (79.1, 79.1, 38.0, 90, 90, 90)),
                         ("hP", (93.0, 93.0, 130.0, 90, 90, 120)),
                         ("mP", (50.0, 60.0, 70.0, 90, 105, 90)),
                         ("mC", (120.0, 60.0, 50.0, 90, 110, 90))]:
        _, prim = lattice(cell, symbol[1], rng, noise=0.001)
        s = br.best_setting(prim)
        assert s.bravais == symbol
        np.testing.assert_allclose(s.cell[:3], cell[:3], rtol=5e-3)
        np.testing.assert_allclose(s.cell[3:], cell[3:], atol=0.5)


def test_near_miss_tetragonal_becomes_orthorhombic():
    rng = np.random.default_rng(5)
    _, prim = lattice((79.1, 79.1 * 1.05, 38.0, 90, 90, 90), "P", rng)
    found = [s.bravais for s in br.conventional_settings(prim)]
    assert "tP" not in found
    assert found[0] == "oP"
    assert br.best_setting(prim, bravais="tP") is None
    # 2 % off is inside the 3 % tolerance, with the misfit reported
    _, prim = lattice((79.1, 79.1 * 1.02, 38.0, 90, 90, 90), "P", rng)
    s = br.best_setting(prim)
    assert s.bravais == "tP"
    assert s.deviation_len == pytest.approx(0.02 / 1.01, rel=1e-6)
    # angle tolerance: 2.5° off 90 → still oP/tP-free mP; with a 2° tolerance it is mP
    _, prim = lattice((40.0, 50.0, 60.0, 90, 92.5, 90), "P", rng)
    assert br.best_setting(prim).bravais == "oP"
    assert br.best_setting(prim, angle_tol_deg=2.0).bravais == "mP"


def test_settings_list_order_and_restriction():
    rng = np.random.default_rng(9)
    _, prim = lattice((50.0, 50.0, 50.0, 90, 90, 90), "P", rng)
    found = [s.bravais for s in br.conventional_settings(prim)]
    assert found[0] == "cP" and found[-1] == "aP"
    assert {"tP", "oP", "mP", "hR", "oC", "mC"} <= set(found)
    order = [niggli.BRAVAIS_TYPES[s].holohedry_order for s in found]
    assert order == sorted(order, reverse=True)
    s = br.best_setting(prim, bravais={"oP", "mP"})
    assert s.bravais == "oP"
    np.testing.assert_allclose(s.cell[:3], 50.0, rtol=1e-9)
    assert br.best_setting(prim, bravais="hP") is None
    s = br.best_setting(prim, bravais=groups.bravais_of_space_group(146))     # R3 → hR
    assert s.bravais == "hR"
    np.testing.assert_allclose(s.cell, (50 * 2**0.5, 50 * 2**0.5, 50 * 3**0.5, 90, 90, 120),
                               rtol=1e-9)
    with pytest.raises(ValueError):
        br.best_setting(prim, bravais="xQ")


def test_bravais_of_space_group():
    expect = {1: "aP", 2: "aP", 3: "mP", 4: "mP", 5: "mC", 9: "mC", 15: "mC", 16: "oP",
              19: "oP", 20: "oC", 21: "oC", 38: "oC", 22: "oF", 23: "oI", 75: "tP", 96: "tP",
              79: "tI", 97: "tI", 143: "hP", 146: "hR", 155: "hR", 168: "hP", 173: "hP",
              195: "cP", 196: "cF", 197: "cI", 230: "cI"}
    for n, sym in expect.items():
        assert groups.bravais_of_space_group(n) == sym, n
    assert {groups.bravais_of_space_group(n) for n in range(1, 231)} == set(niggli.BRAVAIS_SYMBOLS)
    for bad in (0, 231, 2.5, "x"):
        with pytest.raises(ValueError):
            groups.bravais_of_space_group(bad)


def test_niggli_reduce_matches_gemmi():
    rng = np.random.default_rng(1)
    for cell, centring in [((50, 60, 70, 80, 95, 105), "P"), ((79.1, 79.1, 38, 90, 90, 90), "P"),
                           ((120, 60, 50, 90, 110, 90), "C"), ((50, 50, 50, 90, 90, 90), "F"),
                           ((80, 80, 120, 90, 90, 120), "R")]:
        for _ in range(4):
            _, prim = lattice(cell, centring, rng, noise=0.002)
            red, M = niggli.niggli_reduce(prim)
            assert np.issubdtype(M.dtype, np.integer)
            assert round(abs(np.linalg.det(M))) == 1
            np.testing.assert_allclose(M @ prim, red, atol=1e-9)
            assert np.linalg.det(red) > 0
            g = gemmi.GruberVector(gemmi.UnitCell(*basis_to_cell(prim)), "P")
            g.niggli_reduce()
            np.testing.assert_allclose(basis_to_cell(red), g.cell_parameters(), rtol=1e-9,
                                       atol=1e-7)
            # Niggli main conditions (a ≤ b ≤ c, all angles ≤ 90 or all ≥ 90)
            c = basis_to_cell(red)
            assert c[0] <= c[1] * (1 + 1e-9) and c[1] <= c[2] * (1 + 1e-9)
            assert np.all(c[3:] <= 90 + 1e-7) or np.all(c[3:] >= 90 - 1e-7)


def test_degenerate_basis_raises():
    flat = np.array([[10.0, 0, 0], [0, 10.0, 0], [10.0, 10.0, 0]])
    for fn in (niggli.niggli_reduce, br.conventional_settings, br.best_setting):
        with pytest.raises(ValueError, match="degenerate"):
            fn(flat)
    with pytest.raises(ValueError, match="degenerate"):
        br.match_cell(flat, (10, 10, 10, 90, 90, 90))
    with pytest.raises(ValueError):
        br.match_cell(np.eye(3) * 10, (10, 10, 10, 90, 90, 90), centring="Q")


def test_match_cell_finds_known_cell():
    rng = np.random.default_rng(21)
    for cell, centring in [((120.0, 60.0, 50.0, 90.0, 110.0, 90.0), "C"),
                           ((79.1, 79.1, 38.0, 90.0, 90.0, 90.0), "P"),
                           ((80.0, 80.0, 120.0, 90.0, 90.0, 120.0), "R"),
                           ((50.0, 50.0, 50.0, 90.0, 90.0, 90.0), "F"),
                           ((40.0, 50.0, 60.0, 90.0, 90.0, 90.0), "I")]:
        conv, prim = lattice(cell, centring, rng, noise=0.001)
        out = br.match_cell(prim, cell, centring)
        assert out is not None
        basis, T = out
        np.testing.assert_allclose(T @ prim, basis, atol=1e-9)
        assert round(abs(np.linalg.det(T))) == MULT[centring]
        assert np.linalg.det(basis) > 0                             # right-handed
        got = basis_to_cell(basis)
        np.testing.assert_allclose(got[:3], cell[:3], rtol=5e-3)
        np.testing.assert_allclose(got[3:], cell[3:], atol=0.5)
        Y = np.linalg.solve(conv.T, basis.T).T                      # same conventional lattice
        np.testing.assert_allclose(Y, np.rint(Y), atol=0.02)
        # wrong cells / centrings are rejected
        wrong = np.array(cell, dtype=float)
        wrong[0] *= 1.06
        assert br.match_cell(prim, wrong, centring) is None
        if centring != "P":
            assert br.match_cell(prim, cell, "P") is None
    # an orthorhombic lattice in a permuted setting of the known cell
    conv, prim = lattice((40.0, 50.0, 60.0, 90, 90, 90), "P", rng)
    basis, _ = br.match_cell(prim, (50.0, 60.0, 40.0, 90, 90, 90))
    np.testing.assert_allclose(basis_to_cell(basis), (50, 60, 40, 90, 90, 90), rtol=1e-9)
    # a rhombohedral cell given on rhombohedral axes with centring R is matched as primitive
    _, prim = lattice((80.0, 80.0, 120.0, 90.0, 90.0, 120.0), "R", rng)
    rh = basis_to_cell(PRIM["R"] @ cell_to_basis(np.array([80.0, 80.0, 120.0, 90, 90, 120])))
    basis, _ = br.match_cell(prim, rh, "R")
    np.testing.assert_allclose(basis_to_cell(basis), rh, rtol=1e-9, atol=1e-7)


def test_symmetrize_exact_metric_and_orientation():
    rng = np.random.default_rng(4)
    for symbol, cell in CASES:
        _, prim = lattice(cell, symbol[1], rng, noise=0.0005)
        s = br.best_setting(prim)
        sym = br.symmetrize(s)
        c = basis_to_cell(sym)
        assert s.bravais == symbol
        want = niggli.symmetrized_cell(s.cell, symbol)
        np.testing.assert_allclose(c, want, rtol=1e-12, atol=1e-9)
        system = niggli.BRAVAIS_TYPES[symbol].system
        if system in ("tetragonal", "hexagonal", "cubic"):
            assert c[0] == pytest.approx(c[1], rel=1e-12)
        if system == "cubic":
            assert c[0] == pytest.approx(c[2], rel=1e-12)
        if system != "triclinic":
            assert c[3] == pytest.approx(90.0, abs=1e-9) and c[5] == pytest.approx(
                120.0 if system == "hexagonal" else 90.0, abs=1e-9)
        assert np.linalg.det(sym) > 0
        # orientation kept: each axis within 0.1° of the unsymmetrised one
        cosang = np.sum(sym * s.basis, 1) / np.linalg.norm(sym, axis=1) / np.linalg.norm(
            s.basis, axis=1)
        assert np.rad2deg(np.arccos(np.clip(cosang, -1, 1))).max() < 0.1
    # an exact basis comes back unchanged (orientation exactly preserved)
    U = random_rotation(rng)
    B = cell_to_basis(np.array([93.0, 93.0, 130.0, 90, 90, 120])) @ U.T
    np.testing.assert_allclose(niggli.symmetrize_basis(B, "hP"), B, atol=1e-9)
    # hR on rhombohedral axes stays rhombohedral
    rh = np.array([81.0, 80.0, 80.5, 81.5, 82.0, 82.5])
    np.testing.assert_allclose(niggli.symmetrized_cell(rh, "hR"), [80.5] * 3 + [82.0] * 3)
    np.testing.assert_allclose(niggli.symmetrized_cell((80.0, 80.4, 120, 90.2, 89.9, 119.5), "hR"),
                               (80.2, 80.2, 120, 90, 90, 120))


def test_primitive_basis_and_centring_codes():
    rng = np.random.default_rng(8)
    for letter in ("P", "A", "B", "C", "I", "F", "R"):
        conv = cell_to_basis(np.array([60.0, 70.0, 80.0, 90, 90, 90])) @ random_rotation(rng).T
        p = niggli.primitive_basis(conv, letter)
        T = np.linalg.solve(p.T, conv.T).T               # conv = T @ primitive
        Ti = np.rint(T).astype(int)
        np.testing.assert_allclose(T, Ti, atol=1e-9)
        assert str(niggli.centring_of_transform(Ti)) == letter
        assert np.linalg.det(p) > 0
    # a supercell is no centred cell
    assert str(niggli.centring_of_transform(np.diag([2, 1, 1]))) == ""
    assert str(niggli.centring_of_transform(np.diag([1, 1, 1]))) == "P"
    # round trip: a conventional C cell → primitive → best_setting gives it back
    conv = cell_to_basis(np.array([120.0, 60.0, 50.0, 90, 110, 90])) @ random_rotation(rng).T
    s = br.best_setting(niggli.primitive_basis(conv, "C"))
    assert s.bravais == "mC"
    np.testing.assert_allclose(s.basis, conv, atol=1e-9)
