"""Indexing sanity limits (issue 11 item 8): cells below index.min_cell_A are refused and a
spot whose nearest index is (0, 0, 0) never counts as indexed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from jfx.index.base import Indexer, IndexStatus
from jfx.index.indexing import IndexOptions, index, shortest_edge


class FixedIndexer(Indexer):
    """De-novo-like indexer proposing one given basis for every image."""

    def __init__(self, basis):
        self.basis = np.asarray(basis, dtype=np.float64)

    def candidates(self, q, valid):
        return [self.basis[None] for _ in range(len(q))]


ROT = Rotation.from_euler("xyz", [17.0, -33.0, 51.0], degrees=True).as_matrix()


def _run(basis, q, **opt):
    r = index(q[None], np.ones((1, len(q)), bool), FixedIndexer(basis),
              options=IndexOptions(**opt))[0]
    return r


def test_tiny_cell_indexing_everything_as_000_is_refused():
    # 60 low-resolution spots (|q| < 0.15 1/A, d > 6.7 A) and a 1 A cell: every fractional
    # index is within 0.15 of (0, 0, 0)
    rng = np.random.default_rng(4)
    q = rng.normal(size=(60, 3))
    q *= rng.uniform(0.02, 0.15, (60, 1)) / np.linalg.norm(q, axis=1, keepdims=True)
    tiny = 1.0 * ROT
    assert np.all(np.abs(q @ tiny.T) < 0.2)
    assert not _run(tiny, q).indexed                            # min_cell_A (5 A)
    r = _run(tiny, q, min_cell_A=0.0)                           # the 000 rule alone
    assert not r.indexed and int(r.status) == IndexStatus.NOT_VIABLE


def test_small_true_cell_needs_a_lower_min_cell():
    # a genuine 3.5 A cubic lattice (small molecule): all hkl in [-2, 2]^3 except 000
    basis = 3.5 * ROT
    h = np.stack(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    h = h[np.any(h != 0, axis=1)]
    q = h @ np.linalg.inv(basis).T           # q = h · B⁻ᵀ (rows of B are a, b, c)
    np.testing.assert_allclose(q @ basis.T, h, atol=1e-9)
    assert shortest_edge(basis) == pytest.approx(3.5)
    r = _run(basis, q)
    assert not r.indexed                                          # 3.5 A < 5 A default
    r = _run(basis, q, min_cell_A=2.0)
    assert r.indexed and r.n_indexed[0] == len(h)
    assert shortest_edge(np.asarray(r.basis[0])) == pytest.approx(3.5, rel=1e-6)
