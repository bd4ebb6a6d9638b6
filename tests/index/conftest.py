"""Fixtures for the indexing tests: synthetic lattices and the ffbidx_simple spot files."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import missing_data

# One cell per crystal system (conventional setting), with the space group used for -S and
# the lattice centring (absent reflections are not simulated).
CELLS = {
    "triclinic": ((41.0, 52.0, 63.0, 78.0, 84.0, 97.0), 1, "P"),
    "monoclinic": ((50.0, 60.0, 70.0, 90.0, 105.0, 90.0), 4, "P"),
    "monoclinic_C": ((120.0, 60.0, 50.0, 90.0, 110.0, 90.0), 5, "C"),
    "orthorhombic": ((45.0, 62.0, 81.0, 90.0, 90.0, 90.0), 19, "P"),
    "orthorhombic_I": ((60.0, 75.0, 90.0, 90.0, 90.0, 90.0), 23, "I"),
    "tetragonal": ((79.1, 79.1, 38.0, 90.0, 90.0, 90.0), 96, "P"),
    "tetragonal_I": ((70.0, 70.0, 110.0, 90.0, 90.0, 90.0), 97, "I"),
    "hexagonal": ((93.0, 93.0, 130.0, 90.0, 90.0, 120.0), 173, "P"),
    "rhombohedral": ((80.0, 80.0, 180.0, 90.0, 90.0, 120.0), 146, "R"),
    "cubic": ((78.0, 78.0, 78.0, 90.0, 90.0, 90.0), 195, "P"),
    "cubic_F": ((120.0, 120.0, 120.0, 90.0, 90.0, 90.0), 196, "F"),
}


def read_ffbidx_file(path):
    """(reference basis (3, 3) Å rows, spot vectors (n, 3) Å⁻¹) of an ffbidx_simple file."""
    rows = []
    with open(path) as fh:
        lines = fh.read().splitlines()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rows.append([float(v) for v in line.split()])
    basis = np.array(rows[0], dtype=np.float64).reshape(3, 3)
    return basis, np.array(rows[1:], dtype=np.float64)


GOLD = np.array([[39.431335, 25.273994, 63.585350],
                 [28.513729, 60.642746, -41.786659],
                 [-29.096014, 20.499205, 9.895323]])
"""Gold basis of the ffbidx_simple image files (their README)."""


@pytest.fixture
def ffbidx_dir(shared_data):
    d = shared_data / "ffbidx_simple"
    if not d.exists():
        pytest.skip(missing_data("ffbidx_simple data", d))
    return d


def same_lattice(b1: np.ndarray, b2: np.ndarray, tol: float = 0.02) -> bool:
    """True if the bases span the same lattice (b2 = M b1 with M integral, |det M| = 1)."""
    M = np.asarray(b2) @ np.linalg.inv(np.asarray(b1))
    return bool(np.all(np.abs(M - np.rint(M)) < tol) and abs(abs(np.linalg.det(np.rint(M))) - 1)
                < 1e-6)
