"""Anomalous scattering, sensor efficiency, sample absorption and image scale (issue 17).

Physics of the independent simulator's anomalous mode (``simulate.py --size anomalous``),
written with numpy + gemmi only; nothing here is shared with ``jfx.sim`` or ``jfx.physics``.

* Structure factors with anomalous scattering (:func:`structure_factors`):
  F(h) = Σ_j Σ_ops occ_j (f0_j(s) + f'_j + i f''_j) exp(−B_j s²/4) exp(2πi h·(R x_j + t)),
  s = 1/d, over every atom j and every operation (R, t) of the space group (fractional
  coordinates), f0 from the International Tables Vol. C (1992) four-Gaussian fit
  (gemmi ``Element.it92``), f'/f'' from Cromer & Liberman (1970, J. Chem. Phys. 53, 1891;
  gemmi ``cromer_liberman``) at the beam energy. F(h) and F(−h) are computed separately, so
  |F(h)| ≠ |F(−h)| for acentric reflections when f'' ≠ 0.
* Silicon sensor detection efficiency (:func:`sensor_qe`): the fraction of the photons
  absorbed in a sensor of thickness t along the ray's path t/cos θ_in,
  QE = 1 − exp(−μ t / cos θ_in), θ_in the angle between the ray and the sensor normal
  (as in dxtbx's ``ParallaxCorrectedPxMmStrategy``/DIALS's "dqe" and XDS's SENSOR_THICKNESS).
  μ of Si at 1.5 Å: NIST XCOM / Hubbell & Seltzer (NISTIR 5632) μ/ρ = 63.8 cm²/g at 8 keV
  and 33.89 cm²/g at 10 keV, log-log interpolated to 8.2656 keV: 58.15 cm²/g; ρ = 2.33 g/cm³
  → μ = 13.55 mm⁻¹ (:data:`MU_SI_1P5A_PER_MM`).
* Absorbing sample (:func:`ellipsoid_transmission`): an ellipsoidal crystal (semi-axes along the
  sample-frame x, y, z at φ = 0) rotating with the goniometer; for each diffraction event the
  transmission A = ⟨exp(−μ (t_in + t_out))⟩ over fixed points inside the crystal, t_in the path
  of the incoming beam from the crystal surface to the point, t_out that of the diffracted ray
  from the point to the surface (the Gaussian-grid / Monte-Carlo absorption of e.g. Busing &
  Levy 1957, Acta Cryst. 10, 180, sampled here). Position- and rotation-dependent: Friedel
  mates, recorded at other φ and detector places, see different A. μ default 1.0 mm⁻¹ ≈ water
  at 8.27 keV (NIST: μ/ρ = 10.37 cm²/g at 8 keV), the order of a protein crystal.
* Per-image scale (:func:`image_scales`): a slow sinusoidal beam/crystal decay plus jitter.
"""

from __future__ import annotations

import math

import gemmi
import numpy as np

MU_SI_1P5A_PER_MM = 13.55
"""Linear attenuation coefficient of silicon at 1.5 Å (8.2656 keV), mm⁻¹ (NIST XCOM, above)."""

HC_KEV_A = 12.398419843
"""h·c in keV·Å (CODATA 2018)."""


def anomalous_factors(elements, wavelength_A: float) -> dict:
    """{element: (f', f'')} (electrons) at ``wavelength_A`` (Cromer-Liberman, gemmi)."""
    e_ev = 1000.0 * HC_KEV_A / wavelength_A
    out = {}
    for el in elements:
        z = gemmi.Element(el).atomic_number
        fp, fpp = gemmi.cromer_liberman(z=z, energy=e_ev)
        out[el] = (float(fp), float(fpp))
    return out


def f0_it92(element: str, stol2: np.ndarray) -> np.ndarray:
    """Normal scattering factor f0 (electrons) at (sin θ/λ)² = ``stol2`` (Å⁻²), IT92 fit."""
    c = gemmi.Element(element).it92.get_coefs()  # a1..a4, b1..b4, c
    a, b = np.asarray(c[:4]), np.asarray(c[4:8])
    stol2 = np.asarray(stol2, np.float64)
    return (a[None] * np.exp(-b[None] * stol2[..., None])).sum(-1) + c[8]


def space_group_ops(sg_number: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (n, 3, 3) and translation (n, 3) parts of every operation, acting on
    fractional column vectors x' = R x + t."""
    sg = gemmi.find_spacegroup_by_number(sg_number)
    rot, tr = [], []
    for op in sg.operations():
        rot.append(np.array(op.rot, np.float64) / gemmi.Op.DEN)
        tr.append(np.array(op.tran, np.float64) / gemmi.Op.DEN)
    return np.array(rot), np.array(tr)


def structure_factors(st: gemmi.Structure, hkl: np.ndarray, sg_number: int,
                      wavelength_A: float | None, chunk: int = 256) -> np.ndarray:
    """Complex F(h) (electrons) of every row of ``hkl`` (n, 3) from the atoms of ``st[0]``.

    ``wavelength_A``: f'/f'' of every element at that wavelength (Cromer-Liberman);
    None: no anomalous scattering (then F(−h) = F(h)*). Sum over all symmetry mates
    (module docstring); d from ``st.cell``.
    """
    atoms = [a for ch in st[0] for r in ch for a in r]
    frac = np.array([st.cell.fractionalize(a.pos).tolist() for a in atoms])  # (n_at, 3)
    el = np.array([a.element.name for a in atoms])
    occ = np.array([a.occ for a in atoms])
    biso = np.array([a.b_iso for a in atoms])
    names = sorted(set(el))
    fpp = anomalous_factors(names, wavelength_A) if wavelength_A else {e: (0.0, 0.0)
                                                                       for e in names}
    el_idx = np.array([names.index(e) for e in el])
    rot, tr = space_group_ops(sg_number)
    xs = np.einsum("oij,aj->oai", rot, frac) + tr[:, None, :]  # (n_op, n_at, 3)
    hkl = np.asarray(hkl, np.float64)
    fracm = np.array(st.cell.frac.mat.tolist())  # r (row) = h · frac, |r| = 1/d
    out = np.empty(len(hkl), np.complex128)
    for s0 in range(0, len(hkl), chunk):
        h = hkl[s0:s0 + chunk]
        stol2 = 0.25 * ((h @ fracm) ** 2).sum(1)
        fel = np.stack([f0_it92(e, stol2) + fpp[e][0] + 1j * fpp[e][1] for e in names], 1)
        fat = fel[:, el_idx] * occ[None] * np.exp(-biso[None] * stol2[:, None])  # (m, n_at)
        geo = np.zeros((len(h), len(atoms)), np.complex128)
        for x in xs:
            geo += np.exp(2j * math.pi * (h @ x.T))
        out[s0:s0 + chunk] = (fat * geo).sum(1)
    return out


def sensor_qe(cos_in: np.ndarray, mu_per_mm: float, thickness_mm: float) -> np.ndarray:
    """Detection efficiency 1 − exp(−μ t / cos θ_in) of a sensor of thickness t (mm) for rays
    at cos θ_in to the sensor normal (``cos_in`` (n,), > 0)."""
    return 1.0 - np.exp(-mu_per_mm * thickness_mm / np.asarray(cos_in, np.float64))


def ellipsoid_points(semi_axes_mm, n: int, seed: int) -> np.ndarray:
    """``n`` fixed points uniform inside the ellipsoid x²/a² + y²/b² + z²/c² ≤ 1 (mm), (n, 3)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = rng.random(n) ** (1.0 / 3.0)
    return v * r[:, None] * np.asarray(semi_axes_mm, np.float64)[None]


def ellipsoid_exit(points: np.ndarray, u: np.ndarray, semi_axes_mm) -> np.ndarray:
    """Distance (mm) from each point (…, 3) inside the ellipsoid to its surface along unit
    direction u (…, 3): the positive root of (p + t u)ᵀ A (p + t u) = 1, A = diag(1/a²)."""
    A = 1.0 / np.asarray(semi_axes_mm, np.float64) ** 2
    uu = (u * u * A).sum(-1)
    pu = (points * u * A).sum(-1)
    pp = (points * points * A).sum(-1)
    return (-pu + np.sqrt(np.maximum(pu * pu - uu * (pp - 1.0), 0.0))) / uu


def ellipsoid_transmission(s0_dir: np.ndarray, s1_dir: np.ndarray, R: np.ndarray,
                           semi_axes_mm, mu_per_mm: float, points: np.ndarray,
                           chunk: int = 4096) -> np.ndarray:
    """Transmission A (n,) of each event through the rotating ellipsoidal crystal.

    Args:
        s0_dir: (3,) unit incoming beam direction (lab).
        s1_dir: (n, 3) unit diffracted directions (lab).
        R: (n, 3, 3) goniometer rotation at each event (sample → lab).
        semi_axes_mm: (3,) ellipsoid semi-axes in the sample frame (mm).
        mu_per_mm: linear attenuation coefficient of the crystal (mm⁻¹).
        points: (m, 3) sample-frame points inside the crystal (:func:`ellipsoid_points`).
    """
    n = len(s1_dir)
    out = np.empty(n)
    for c0 in range(0, n, chunk):
        Rt = np.swapaxes(R[c0:c0 + chunk], 1, 2)  # lab → sample
        u_in = -(Rt @ np.asarray(s0_dir, np.float64))  # back along the beam, sample frame
        u_out = np.einsum("nij,nj->ni", Rt, s1_dir[c0:c0 + chunk])
        t_in = ellipsoid_exit(points[None], u_in[:, None, :], semi_axes_mm)
        t_out = ellipsoid_exit(points[None], u_out[:, None, :], semi_axes_mm)
        out[c0:c0 + chunk] = np.exp(-mu_per_mm * (t_in + t_out)).mean(1)
    return out


def image_scales(n_images: int, amp: float, jitter: float, seed: int) -> np.ndarray:
    """Per-image scale k_i = (1 + amp·sin(2π·1.5 i/n + 0.3))·exp(N(0, jitter²)), (n_images,)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n_images)
    smooth = 1.0 + amp * np.sin(2 * math.pi * 1.5 * i / max(n_images, 1) + 0.3)
    return smooth * np.exp(rng.normal(0.0, jitter, n_images))
