"""Synthetic reciprocal-space spot sets for indexing tests and benchmarks (DIALS-style fixture).

A crystal (cell + orientation U) in a still or a rotation sweep produces observed spot
vectors q (Å⁻¹, lab frame, McStas: z along the beam) the way a spot finder would: only
reflections close to the Ewald sphere are seen, each observed ON the sphere along its
diffracted-beam direction (so a still's excitation error becomes a small position error),
with Gaussian angular noise (centroid error) and optional false spots (random directions).

No detector is modelled here: the detector acceptance is a maximum scattering angle.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jfx.models.lattice import cell_to_basis
from jfx.physics.rotation import axis_rotation


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed random rotation matrix (3, 3)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@dataclasses.dataclass(frozen=True)
class SyntheticSpots:
    """A synthetic spot set.

    Attributes:
        q: (n, 3) observed spot vectors (Å⁻¹, lab frame; for rotation data already rotated
            back to goniometer angle 0 if ``unrotate`` was asked, else at their own angle).
        hkl: (n, 3) int true Miller indices in the given cell's setting; 0,0,0 for false spots.
        true: (n,) bool, False for false spots.
        basis: (3, 3) true real-space basis (rows a, b, c, Å) at angle 0 / of the still.
        angle_rad: (n,) rotation angle of each spot (0 for stills).
    """

    q: np.ndarray
    hkl: np.ndarray
    true: np.ndarray
    basis: np.ndarray
    angle_rad: np.ndarray


def allowed_by_centring(h: np.ndarray, centring: str) -> np.ndarray:
    """(n,) bool: reflections (n, 3) allowed by the lattice centring (P A B C I F R; R =
    obverse hexagonal setting, −h + k + l = 3n)."""
    h0, k0, l0 = h[:, 0], h[:, 1], h[:, 2]
    c = centring.upper()
    if c == "P":
        return np.ones(len(h), bool)
    if c == "A":
        return (k0 + l0) % 2 == 0
    if c == "B":
        return (h0 + l0) % 2 == 0
    if c == "C":
        return (h0 + k0) % 2 == 0
    if c == "I":
        return (h0 + k0 + l0) % 2 == 0
    if c == "F":
        return ((h0 + k0) % 2 == 0) & ((k0 + l0) % 2 == 0)
    if c == "R":
        return (-h0 + k0 + l0) % 3 == 0
    raise ValueError(f"unknown centring {centring!r}")


def _miller_grid(basis: np.ndarray, d_min: float, centring: str = "P") -> np.ndarray:
    """All hkl ≠ 0 with d ≥ d_min for the real basis (rows a, b, c), allowed by the
    centring."""
    lens = np.linalg.norm(basis, axis=1)
    hmax = np.floor(lens / d_min).astype(int) + 1
    r = [np.arange(-m, m + 1) for m in hmax]
    h = np.stack(np.meshgrid(*r, indexing="ij"), -1).reshape(-1, 3)
    h = h[np.any(h != 0, axis=1)]
    rec = np.linalg.inv(basis).T
    q = h @ rec
    h = h[np.linalg.norm(q, axis=1) <= 1.0 / d_min]
    return h[allowed_by_centring(h, centring)]


def still_spots(cell, U=None, *, wavelength_A: float = 1.0, d_min_A: float = 2.0,
                max_two_theta_deg: float = 60.0, excitation_invA: float = 1.5e-3,
                noise_rad: float = 2e-4, n_false: int = 0, max_spots: int | None = None,
                centring: str = "P",
                rng: np.random.Generator | None = None) -> SyntheticSpots:
    """Spots of a still: reflections with |excitation error| ≤ ``excitation_invA``.

    Args:
        cell: (6,) a, b, c (Å), α, β, γ (deg) — the setting of the returned ``hkl``.
        U: (3, 3) rotation of the crystal (None: random from ``rng``).
        wavelength_A: λ.
        d_min_A: resolution limit.
        max_two_theta_deg: detector acceptance.
        excitation_invA: half-width of the Ewald-sphere shell (mosaicity + bandwidth).
        noise_rad: rms angular error of the observed diffracted-beam direction.
        n_false: random false spots added (uniform over the accepted directions).
        max_spots: keep at most this many (lowest resolution first, as the spot finder).
        centring: lattice centring of ``cell`` (P A B C I F R): absent reflections are left out.
        rng: random generator.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    U = random_rotation(rng) if U is None else np.asarray(U, dtype=np.float64)
    basis = cell_to_basis(np.asarray(cell, dtype=np.float64)) @ U.T
    h = _miller_grid(basis, d_min_A, centring)
    q = h @ np.linalg.inv(basis).T
    k = 1.0 / wavelength_A
    s0 = np.array([0.0, 0.0, k])
    s1 = s0 + q
    exc = np.linalg.norm(s1, axis=1) - k
    u1 = s1 / np.linalg.norm(s1, axis=1)[:, None]
    tt = np.degrees(np.arccos(np.clip(u1[:, 2], -1, 1)))
    keep = (np.abs(exc) <= excitation_invA) & (tt <= max_two_theta_deg)
    h, u1 = h[keep], u1[keep]
    u1 = _jitter(u1, noise_rad, rng)
    hkl = h.astype(np.int64)
    true = np.ones(len(h), bool)
    if n_false:
        # uniform over the accepted cone of diffracted directions
        ct = rng.uniform(np.cos(np.radians(min(max_two_theta_deg, 2 * np.degrees(
            np.arcsin(min(1.0, wavelength_A / (2 * d_min_A))))))), 1.0, n_false)
        ph = rng.uniform(0, 2 * np.pi, n_false)
        st = np.sqrt(1 - ct * ct)
        uf = np.stack([st * np.cos(ph), st * np.sin(ph), ct], 1)
        u1 = np.concatenate([u1, uf])
        hkl = np.concatenate([hkl, np.zeros((n_false, 3), np.int64)])
        true = np.concatenate([true, np.zeros(n_false, bool)])
    qo = u1 * k - s0
    order = np.argsort(np.linalg.norm(qo, axis=1), kind="stable")
    if max_spots is not None:
        order = order[:max_spots]
    return SyntheticSpots(qo[order], hkl[order], true[order], basis, np.zeros(len(order)))


def rotation_spots(cell, U=None, *, wavelength_A: float = 1.0, d_min_A: float = 2.0,
                   max_two_theta_deg: float = 60.0, axis=(1.0, 0.0, 0.0),
                   start_deg: float = 0.0, range_deg: float = 30.0,
                   noise_rad: float = 2e-4, n_false: int = 0, unrotate: bool = True,
                   centring: str = "P", rng: np.random.Generator | None = None) -> SyntheticSpots:
    """Spots of a rotation sweep: every reflection crossing the sphere in the range.

    Each reflection is observed at its diffraction angle φ (exact), its direction jittered.
    With ``unrotate`` the observed q is rotated back to angle 0 (q0 = R(φ)ᵀ q), the input of
    3-D (two-pass) indexing. ``centring`` as in :func:`still_spots`.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    U = random_rotation(rng) if U is None else np.asarray(U, dtype=np.float64)
    basis = cell_to_basis(np.asarray(cell, dtype=np.float64)) @ U.T
    h = _miller_grid(basis, d_min_A, centring)
    q0 = h @ np.linalg.inv(basis).T
    k = 1.0 / wavelength_A
    e = np.asarray(axis, dtype=np.float64)
    e = e / np.linalg.norm(e)
    s0 = np.array([0.0, 0.0, k])
    # solve |s0 + R(φ) q0| = k  ⇔  2 s0·R(φ)q0 + |q0|² = 0, R(φ)q = q∥ + cosφ q⊥ + sinφ e×q
    qpar = (q0 @ e)[:, None] * e
    qperp = q0 - qpar
    exq = np.cross(e, q0)
    A = qperp @ s0
    B = exq @ s0
    C = -(np.sum(q0 * q0, 1) / 2 + qpar @ s0)
    R = np.hypot(A, B)
    ok = (R > 0) & (np.abs(C) <= R)
    base = np.arctan2(B, A)
    dphi = np.arccos(np.clip(C / np.where(R > 0, R, 1), -1, 1))
    qs, hs, phis = [], [], []
    lo, hi = np.radians(start_deg), np.radians(start_deg + range_deg)
    for sgn in (1.0, -1.0):
        phi = base + sgn * dphi
        # bring φ into [lo, lo + 2π)
        phi = lo + np.mod(phi - lo, 2 * np.pi)
        sel = ok & (phi <= hi)
        Rm = axis_rotation(e, phi[sel])
        q = np.einsum("nij,nj->ni", Rm, q0[sel])
        s1 = s0 + q
        u1 = s1 / np.linalg.norm(s1, axis=1)[:, None]
        tt = np.degrees(np.arccos(np.clip(u1[:, 2], -1, 1)))
        acc = tt <= max_two_theta_deg
        u1 = _jitter(u1[acc], noise_rad, rng)
        qo = u1 * k - s0
        if unrotate:
            qo = np.einsum("nji,nj->ni", Rm[acc], qo)
        qs.append(qo)
        hs.append(h[sel][acc])
        phis.append(phi[sel][acc])
    q = np.concatenate(qs)
    hkl = np.concatenate(hs).astype(np.int64)
    ang = np.concatenate(phis)
    true = np.ones(len(q), bool)
    if n_false:
        qf = rng.normal(size=(n_false, 3))
        qf *= (rng.uniform(0.05, 1.0 / d_min_A, n_false) / np.linalg.norm(qf, axis=1))[:, None]
        q = np.concatenate([q, qf])
        hkl = np.concatenate([hkl, np.zeros((n_false, 3), np.int64)])
        ang = np.concatenate([ang, rng.uniform(lo, hi, n_false)])
        true = np.concatenate([true, np.zeros(n_false, bool)])
    return SyntheticSpots(q, hkl, true, basis, ang)


def _jitter(u: np.ndarray, sigma_rad: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate unit vectors by small random tangential angles (rms ``sigma_rad`` per axis)."""
    if sigma_rad <= 0 or len(u) == 0:
        return u
    v = u + rng.normal(scale=sigma_rad, size=u.shape)
    return v / np.linalg.norm(v, axis=1)[:, None]
