"""Rotation indexing: two-pass, single-pass, forced lattice (synthetic sweeps)."""

from __future__ import annotations

import numpy as np

from jfx.index import IndexOptions, IndexStatus, Symmetry
from jfx.index import rotation as rot
from jfx.index.common import orientation_error_deg
from jfx.index.fft import FFTIndexer, FFTSettings
from jfx.models.lattice import basis_to_cell
from jfx.physics.rotation import lattice_at, to_angle_zero
from jfx.sim.spots import rotation_spots

CELL = (79.1, 79.1, 38.0, 90.0, 90.0, 90.0)
AXIS = np.array([1.0, 0.0, 0.0])


def _sweep(range_deg=30.0, osc_deg=0.5, seed=0, n_false=0):
    """Spots of a sweep binned into images: (q at the image, q0, valid, phi_centre, truth)."""
    s = rotation_spots(CELL, rng=np.random.default_rng(seed), range_deg=range_deg,
                       unrotate=False, d_min_A=2.0, n_false=n_false, axis=AXIS)
    img = np.floor(np.degrees(s.angle_rad) / osc_deg).astype(int)
    n_img = round(range_deg / osc_deg)
    per = [np.flatnonzero(img == i) for i in range(n_img)]
    cap = max(len(p) for p in per)
    q = np.zeros((n_img, cap, 3))
    valid = np.zeros((n_img, cap), bool)
    for i, p in enumerate(per):
        q[i, :len(p)] = s.q[p]
        valid[i, :len(p)] = True
    phi = np.radians((np.arange(n_img) + 0.5) * osc_deg)
    q0 = to_angle_zero(q, AXIS, phi[:, None])
    return q, q0, valid, phi, s


def test_two_pass_indexes_every_image():
    q, q0, valid, phi, s = _sweep(n_false=100)
    out = rot.two_pass(q0, valid, AXIS, phi, 20, FFTIndexer(FFTSettings(backend="numpy")),
                       Symmetry(None, 96), IndexOptions())
    assert out.status == IndexStatus.OK and out.bravais == "tP"
    np.testing.assert_allclose(basis_to_cell(out.basis0), CELL, rtol=0.003, atol=0.05)
    M = np.rint(out.basis0 @ np.linalg.inv(s.basis))
    assert orientation_error_deg(out.basis0, M @ s.basis) < 0.1
    ok = np.array([r.indexed for r in out.images])
    assert ok.mean() >= 0.99
    # per-image lattices are the angle-0 lattice rotated to the image
    i = 17
    np.testing.assert_allclose(np.asarray(out.images[i].basis[0]),
                               lattice_at(out.basis0, AXIS, phi[i]), atol=1e-9)
    # Miller indices of the true spots in image i agree with the truth (same change of basis)
    hk = (q[i][valid[i]] @ np.asarray(out.images[i].basis[0]).T)
    assert np.mean(np.abs(hk - np.rint(hk)).max(axis=1) < 0.2) > 0.8


def test_single_pass_waits_for_the_angular_range():
    _, q0, valid, phi, _ = _sweep()
    out = rot.single_pass(q0, valid, AXIS, phi, 5.0, FFTIndexer(FFTSettings(backend="numpy")),
                          Symmetry(), IndexOptions())
    assert out.status == IndexStatus.OK and out.bravais == "tP"
    assert out.angle_range_deg >= 5.0 - 1e-9 and out.n_images_pass1 >= 11
    assert np.mean([r.indexed for r in out.images]) >= 0.99
    # too short a sweep for the requested range: nothing indexed, status says why
    short = rot.single_pass(q0[:4], valid[:4], AXIS, phi[:4], 5.0,
                            FFTIndexer(FFTSettings(backend="numpy")), Symmetry(), IndexOptions())
    assert short.basis0 is None and short.status == IndexStatus.TOO_FEW_SPOTS


def test_forced_lattice_skips_pass_one():
    _, q0, valid, phi, s = _sweep(range_deg=10.0)
    out = rot.two_pass(q0, valid, AXIS, phi, 0, None, Symmetry(), IndexOptions(),
                       force_basis0=s.basis)
    np.testing.assert_allclose(out.basis0, s.basis)
    assert np.mean([r.indexed for r in out.images]) == 1.0
    # a wrong lattice indexes (almost) nothing
    bad = rot.two_pass(q0, valid, AXIS, phi, 0, None, Symmetry(), IndexOptions(),
                       force_basis0=s.basis * 1.1)
    assert np.mean([r.indexed for r in bad.images]) < 0.1
