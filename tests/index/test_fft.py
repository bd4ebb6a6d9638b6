"""DPS/1-D FFT search: direction sampling, kernel vs numpy path, vector refinement, candidates."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.index.common import refine_basis
from jfx.index.fft import (
    FFTIndexer,
    FFTSettings,
    _dps_kernel,
    _dps_numpy,
    half_sphere,
    refine_vectors,
)
from jfx.sim.spots import still_spots
from tests.index.conftest import CELLS, same_lattice


def test_half_sphere_uniform():
    d = half_sphere(4096)
    assert d.shape == (4096, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    assert d[:, 2].min() >= 0.0
    # the mean z of a uniform half-sphere is 1/2; the nearest-neighbour spacing is even
    assert abs(d[:, 2].mean() - 0.5) < 1e-3
    cosang = d[:300] @ d.T
    np.fill_diagonal(cosang[:, :300], -1)
    nn = np.degrees(np.arccos(np.clip(cosang.max(axis=1), -1, 1)))
    assert nn.max() < 2.2 * np.median(nn)


def test_refine_vectors_recovers_lattice_vector():
    s = still_spots(CELLS["orthorhombic"][0], rng=np.random.default_rng(3), noise_rad=0.0,
                    excitation_invA=0.0005)
    true_c = s.basis[2]
    rng = np.random.default_rng(0)
    start = true_c * 1.004 + rng.normal(scale=0.05, size=3)
    d, n = refine_vectors(start[None], s.q)
    np.testing.assert_allclose(d[0], true_c, atol=0.05)
    assert n[0] == len(s.q)


def test_kernel_equals_numpy_path():
    rng = np.random.default_rng(5)
    s = still_spots(CELLS["tetragonal"][0], rng=rng, n_false=10, max_spots=200)
    q = s.q.astype(np.float32)
    dirs = half_sphere(512)
    qmax = float(np.linalg.norm(q, axis=1).max() * 1.001)
    n_bins, kmin, kmax = 512, 3, 200
    pk_np, k_np = _dps_numpy(q, np.ones(len(q), bool), dirs, qmax, kmin, kmax, n_bins)
    pk, k = _dps_kernel(q[None], np.ones((1, len(q)), bool), dirs.astype(np.float32),
                        np.array([qmax], np.float32), np.array([kmin], np.int32),
                        np.array([kmax], np.int32), n_bins=n_bins)
    pk, k = np.asarray(pk)[0], np.asarray(k)[0]
    np.testing.assert_allclose(pk, pk_np, rtol=2e-3, atol=1e-4)
    # ties can break differently in float32; the peaks must agree almost everywhere
    assert np.mean(k == k_np) > 0.98


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("system", ["tetragonal", "monoclinic", "hexagonal"])
def test_candidates_span_the_true_lattice(backend, system):
    cell = CELLS[system][0]
    s = still_spots(cell, rng=np.random.default_rng(11), n_false=25, max_spots=250,
                    d_min_A=1.8)
    ix = FFTIndexer(FFTSettings(backend=backend, n_directions=8192))
    cands = ix.candidates(s.q[None], np.ones((1, len(s.q)), bool))[0]
    assert len(cands) >= 1
    B, inl = refine_basis(cands[0], s.q, np.ones(len(s.q), bool))
    # the basis spans the true lattice: the true basis is an integral unimodular combination
    assert same_lattice(B, s.basis, tol=0.05)
    # stills: the Ewald offset (≤ 1.5e-3 1/A) moves a spot by up to 0.2 of a 130 A spacing
    assert inl[s.true].mean() > 0.85
    assert inl[~s.true].mean() < 0.3


def test_fft_settings_rejected():
    with pytest.raises(ValueError, match="min_cell_A"):
        FFTSettings(min_cell_A=300.0, max_cell_A=250.0)
    with pytest.raises(ValueError):
        FFTSettings(backend="cuda")
