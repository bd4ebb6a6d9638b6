"""Independent rotation-sweep simulator for the peer comparison (no jfx.sim, no jfx physics).

A held-out test for jfx and DIALS: its model details differ on purpose from ``jfx.sim``:

* Structure: a pseudo-protein model (a compact random-walk chain of C/N/O/S atoms with
  1.5 Å steps and per-atom B factors 12-40 Å², lysozyme cell 79.1 79.1 37.9, P4₃2₁2), written
  as ``model.pdb``; |F|² from gemmi's ``StructureFactorCalculatorX.calculate_sf_from_model``
  (IT92 form factors, isotropic B) for one representative of each symmetry orbit.
* Diffraction: for every hkl to ``d_min``, both rotation angles φ where the rotated
  reciprocal vector r(φ) meets the Ewald sphere, 2 s0·r(φ) + |r|² = 0 (closed form in
  cos φ / sin φ); diffracted beam s1 = s0 + r(φc) intersected with the detector plane.
* Rocking curve: in the Kabsch (2010, Acta Cryst. D66, 133) e3 coordinate η = ζ (φ − φc),
  ζ = m2·(s1 × s0)/|s1 × s0|, the profile is a top-hat of full width ``divergence_deg``
  (beam divergence) convolved with a Gaussian σ = ``mosaicity_deg`` (mosaic spread); the
  fraction on image i is a difference of its closed-form CDF
  F(x) = [G(x + w/2) − G(x − w/2)]/w, G(u) = u Φ(u/σ) + σ φ(u/σ).
  (jfx.sim uses a Gaussian rocking curve.)
* Spot on the detector: a two-component anisotropic Gaussian (core σ_t tangential,
  σ_r = σ_t + ``radial_growth_px``·sin 2θ radial; plus a ``tail_fraction`` component 2.5×
  wider: crystal/beam-shape tails), integrated over each pixel by n×n sub-pixel sampling.
* Intensities: photons = scale · |F|² · L · P · frame fraction, Lorentz L = 1/|ζ|,
  polarisation P for a horizontally polarised beam (fraction ``polarization``), Kahn et al.
  (1982) form. ``scale`` is calibrated so that ``spots_ge50`` reflection-frames per image
  have ≥ 50 expected photons.
* Background: constant + water ring (3.7 Å) + air scatter ∝ 1/r near the beam, varying
  ±5 % over the sweep; Poisson noise of the total; integer counts.

Outputs (``out`` directory): ``sim_master.h5`` (Jungfraujoch-layout NXmx, images in the
master itself: one file, as DIALS's spot finder needs), ``sim_truth.h5`` and ``model.pdb``.

Truth file layout:
  ``/events``: one row per diffraction event (full reflection): ``h, k, l``, ``phi_deg``
  (φc), ``frame`` (centroid frame coordinate, image i spans [i, i+1)), ``x, y`` (px, first
  pixel centre = 0), ``d`` (Å), ``i_true`` (|F|², e²), ``lorentz``, ``polarization``,
  ``zeta``, ``photons`` (expected photons recorded in the sweep, pixel-integrated on the
  detector, Σ of the partials), ``fraction`` (part of the rocking curve inside the sweep),
  ``image_first`` / ``image_last``.
  ``/partials``: ``event``, ``image``, ``photons`` (expected photons of that event on that
  image, on the detector).
  ``/merged``: ``h, k, l`` (canonical orbit representative, see :func:`canonical_hkl`),
  ``i_true``. Attributes: the parameters as JSON, ``space_group``, ``cell``.

Anomalous mode (``--size anomalous`` 360 × 0.5°, ``anomalous_small`` 90 × 0.5°; issue 17):
1M detector at 50 mm, λ 1.5 Å (corner 1.84 Å), bitshuffle+zstd, seed 17; physics in
``anomalous_physics.py`` (module docstring there, with the references):

* Structure: the pseudo-protein (≈ 1 % S) plus ``n_cl`` (6) chloride ions 4 Å outside its
  radius of gyration (:func:`add_chloride`); F(h) and F(−h) computed separately as
  Σ_atoms Σ_ops (f0 + f' + i f'') exp(−B s²/4) exp(2πi h·(R x + t)) with Cromer-Liberman
  f'/f'' of every element at λ (S 0.33/0.53, Cl 0.36/0.67 e at 1.5 Å): Bijvoet ratio
  ⟨|ΔF|⟩/⟨F⟩ ≈ 1.3 % (:func:`anomalous_intensities`). Each diffraction event of h gets |F(h)|².
* Silicon sensor detection efficiency QE = 1 − exp(−μ t / cos θ_in) (``sensor_qe``,
  ``sensor_mu_per_mm`` 13.55, ``sensor_thickness_mm`` 0.32 (also written to the master's
  ``detector/sensor_thickness``), θ_in between s1 and the detector normal).
* Absorbing crystal: an ellipsoid (``crystal_semi_axes_mm`` 0.12 × 0.08 × 0.04 along the
  sample x (rotation axis), y, z) of μ ``absorption_mu_per_mm`` (1.0; 0 = off) rotating with
  the crystal; transmission of incoming + diffracted path averaged over
  ``absorption_points`` (64) fixed points inside it, per event at its φ.
* Per-image scale k_i = (1 + ``image_scale_amp``·sin(3π i/n + 0.3))·exp(N(0,
  ``image_scale_jitter``²)) (0.1, 0.02) on every partial of image i.
* Photons = scale · k_i · |F(h)|² · L · P · QE · A · frame fraction (polarisation 0.99 as above).
  Every effect is switched by ``--set`` (``sensor_qe=0``, ``absorption_mu_per_mm=0``,
  ``image_scale_amp=0 image_scale_jitter=0``, ``anomalous=0``).

Anomalous truth: ``/merged`` adds ``i_plus`` (|F(h_c)|²), ``i_minus`` (|F(−h_c)|²) and
``centric`` for each Friedel-orbit representative h_c (``i_true`` is their mean);
``/events`` adds ``qe`` and ``transmission``; ``/images/scale`` holds k_i (ones when off).
``experiments/anomalous_diagnostic/score.py`` scores a merged MTZ against it.

Stills mode (``--size stills_small`` 100 images, ``stills`` 300; issue 13): no rotation, one
random crystal per hit image (``hit_rate`` 0.8; misses are background only):

* Crystal: random orientation U, lysozyme cell scaled isotropically by 1 + δ,
  δ ~ N(0, ``cell_spread``) (0.2 %), per-image scale g ~ log-normal(0, ``scale_sigma`` 0.3).
* Partiality (:func:`stills_partiality`): the Ewald offset ε = |s0 + r| − 1/λ of every
  reciprocal-lattice point r = U B h (Å⁻¹) gives P = exp(−ε²/2σ_ε²) with
  σ_ε² = (|r| θ_m)² + δ_dom² + (|r|² λ σ_λ/2λ)²: a Gaussian angular mosaic spread θ_m
  (σ, ``mosaicity_deg`` 0.05°), a mosaic-domain term δ_dom (``domain_invA`` 2e-4 Å⁻¹, the
  reciprocal of the domain size) and a Gaussian band of σ_λ/λ = FWHM/2.3548
  (``bandwidth_fwhm`` 0.2 %; dε/d(1/λ) = −2 sin²θ). In the spirit of the partiality models of
  White et al. (2013, Acta Cryst. D69, 1231, CrystFEL xsphere) and Sauter et al. (2014, Acta
  Cryst. D70, 3299) but written independently and not the shape jfx's scaling assumes.
* Spot: the diffracted direction of s0 + r on the detector, the rotation mode's pixel-integrated
  two-component profile; photons = K g |F|² P_pol P (no Lorentz factor for stills), K
  calibrated so that a g = 1 hit has ``spots_ge50`` reflections with ≥ 50 photons.
* Background and noise as in the rotation mode (constant over the run).

Stills truth ``sim_truth.h5``: ``/observations`` (one row per reflection with P ≥ 1e-3 on a
hit image): ``image, h, k, l`` (crystal setting), ``partiality``, ``ewald_offset``
(Å⁻¹), ``sigma_eps`` (Å⁻¹), ``photons`` (expected photons on the detector, pixel-integrated),
``x, y, d, i_true, polarization``; ``/images``: ``scale`` (g), ``hit``, ``cell`` (n, 6),
``U`` (n, 3, 3; zeros for misses); ``/merged`` as for rotation. The master has no omega scan
(``goniometer=None``) and carries the bandwidth.

Usage::

    python experiments/peer_comparison/simulate.py --size small -o /tmp/peer/sim
    python experiments/peer_comparison/simulate.py --size stills_small -o /tmp/stills/sim
    python experiments/peer_comparison/simulate.py --size anomalous_small -o /tmp/anom/sim \
        --set sensor_qe=0 absorption_mu_per_mm=0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import gemmi
import h5py
import numpy as np
from scipy.special import ndtr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anomalous_physics as ap_phys
from anomalous_physics import MU_SI_1P5A_PER_MM

CELL = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)
SPACE_GROUP = 96  # P 43 21 2


@dataclasses.dataclass
class SimParams:
    """Parameters of the independent sweep (lengths mm/Å, angles deg)."""

    n_images: int = 180
    osc_deg: float = 0.5
    start_deg: float = 0.0
    distance_mm: float = 60.0
    wavelength_A: float = 1.0
    nx: int = 1030
    ny: int = 1064
    pixel_mm: float = 0.075
    beam_center_px: tuple = (518.3, 529.6)
    axis: tuple = (1.0, 0.0, 0.0)
    polarization: float = 0.99
    d_min: float = 1.36  # the detector corner (1.37 Å)
    n_atoms: int = 1000
    mosaicity_deg: float = 0.05
    divergence_deg: float = 0.12
    sigma_px: float = 0.85
    radial_growth_px: float = 0.6
    tail_fraction: float = 0.08
    tail_scale: float = 2.5
    subsample: int = 4
    background: float = 0.6
    water_ring: float = 1.5
    air: float = 40.0
    spots_ge50: float = 220.0
    seed: int = 11
    # anomalous mode (issue 17; anomalous_physics.py); all off by default
    anomalous: bool = False
    n_cl: int = 0
    sensor_qe: bool = False
    sensor_mu_per_mm: float = MU_SI_1P5A_PER_MM
    sensor_thickness_mm: float = 0.32
    absorption_mu_per_mm: float = 0.0
    crystal_semi_axes_mm: tuple = (0.12, 0.08, 0.04)
    absorption_points: int = 64
    image_scale_amp: float = 0.0
    image_scale_jitter: float = 0.0
    codec: str = "bslz4"

    @staticmethod
    def preset(size: str) -> SimParams:
        if size in ("anomalous", "anomalous_small"):
            # issue 17: lysozyme-like S + Cl anomalous scatterers at 1.5 Å, 1M at 50 mm
            # (corner 1.84 Å), 360 (90) × 0.5°, sensor QE, absorbing crystal, image scale
            return SimParams(n_images=360 if size == "anomalous" else 90, distance_mm=50.0,
                             wavelength_A=1.5, d_min=1.83, anomalous=True, n_cl=6,
                             sensor_qe=True, absorption_mu_per_mm=1.0,
                             image_scale_amp=0.1, image_scale_jitter=0.02, codec="bszstd",
                             seed=17)
        if size == "full":
            return SimParams()
        if size == "small":
            return SimParams(n_images=60)
        if size == "tiny":
            return SimParams(n_images=8, nx=512, ny=512, beam_center_px=(258.3, 251.6),
                             distance_mm=60.0, d_min=2.0, n_atoms=300, spots_ge50=60.0)
        raise ValueError(f"unknown size {size!r} (tiny, small, full, anomalous_small, "
                         "anomalous)")


# ----------------------------------------------------------------------------- structure

def pseudo_protein(n_atoms: int, rng: np.random.Generator) -> gemmi.Structure:
    """A compact random-walk chain of ``n_atoms`` C/N/O/S atoms in the lysozyme cell.

    Steps of 1.5 Å with a pull to the chain's centre (radius of gyration ≈ 14 Å), elements
    63/17/19/1 % C/N/O/S, B factors 12-40 Å² rising with the distance from the centre.
    """
    pos = np.zeros((n_atoms, 3))
    centre = np.array([0.25 * CELL[0], 0.25 * CELL[1], 0.25 * CELL[2]])
    p = centre.copy()
    for i in range(n_atoms):
        step = rng.normal(size=3)
        step /= np.linalg.norm(step)
        pull = (centre - p) / 14.0
        step = step + 0.5 * pull
        p = p + 1.5 * step / np.linalg.norm(step)
        pos[i] = p
    el = rng.choice(["C", "N", "O", "S"], size=n_atoms, p=[0.63, 0.17, 0.19, 0.01])
    r = np.linalg.norm(pos - pos.mean(0), axis=1)
    bfac = 12.0 + 28.0 * (r / r.max()) ** 2
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(*CELL)
    st.spacegroup_hm = gemmi.find_spacegroup_by_number(SPACE_GROUP).hm
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    for i in range(n_atoms):
        res = gemmi.Residue()
        res.name = "UNK"
        res.seqid = gemmi.SeqId(i + 1, " ")
        at = gemmi.Atom()
        at.name = str(el[i])
        at.element = gemmi.Element(str(el[i]))
        at.pos = gemmi.Position(*pos[i])
        at.b_iso = float(bfac[i])
        at.occ = 1.0
        res.add_atom(at)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return st


def symmetry_ops(sg_number: int) -> np.ndarray:
    """(n_ops, 3, 3) integer rotation parts acting on row vectors h (h' = h R)."""
    sg = gemmi.find_spacegroup_by_number(sg_number)
    mats = []
    for op in sg.operations():
        R = np.array(op.rot, dtype=np.int64) // gemmi.Op.DEN
        mats.append(R)
    return np.array(mats)


def canonical_hkl(hkl: np.ndarray, sg_number: int, friedel: bool = True) -> np.ndarray:
    """(n, 3) canonical representative of each hkl's Laue orbit (lexicographic maximum).

    Independent of any ASU convention, so jfx, DIALS and truth indices compare directly.
    """
    hkl = np.asarray(hkl, dtype=np.int64)
    ops = symmetry_ops(sg_number)
    cands = [hkl @ R for R in ops]
    if friedel:
        cands += [-c for c in cands]
    c = np.stack(cands, axis=1)  # (n, m, 3)
    key = (c[..., 0] + 512) * 1024 * 1024 + (c[..., 1] + 512) * 1024 + (c[..., 2] + 512)
    best = np.argmax(key, axis=1)
    return c[np.arange(len(hkl)), best]


def hkl_key(hkl: np.ndarray) -> np.ndarray:
    h = np.asarray(hkl, dtype=np.int64)
    return (h[:, 0] + 512) * 1024 * 1024 + (h[:, 1] + 512) * 1024 + (h[:, 2] + 512)


def b_matrix(cell) -> np.ndarray:
    """Reciprocal basis B (columns a*, b*, c*) for the PDB orthogonalisation (Å⁻¹)."""
    uc = gemmi.UnitCell(*cell)
    frac = np.array(uc.frac.mat.tolist())  # orthogonal → fractional (rows)
    return frac.T  # r = B h with columns a*, b*, c*


def all_hkl(cell, d_min: float) -> np.ndarray:
    B = b_matrix(cell)
    hm = int(cell[0] / d_min) + 1
    km = int(cell[1] / d_min) + 1
    lm = int(cell[2] / d_min) + 1
    h, k, l = np.meshgrid(np.arange(-hm, hm + 1), np.arange(-km, km + 1),
                          np.arange(-lm, lm + 1), indexing="ij")
    hkl = np.stack([h.ravel(), k.ravel(), l.ravel()], axis=1)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    s = np.linalg.norm(hkl @ B.T, axis=1)
    return hkl[s <= 1.0 / d_min]


def intensities(st: gemmi.Structure, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|F|² for every hkl (one gemmi call per orbit); returns (I, canonical hkl, I per orbit)."""
    canon = canonical_hkl(hkl, SPACE_GROUP)
    keys = hkl_key(canon)
    uk, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    model = st[0]
    rep = canon[first]
    i_orbit = np.empty(len(uk))
    for j, h in enumerate(rep):
        f = calc.calculate_sf_from_model(model, [int(v) for v in h])
        i_orbit[j] = abs(f) ** 2
    # systematic absences come out as ~0 from the sum; make them exact
    sg = gemmi.find_spacegroup_by_number(SPACE_GROUP)
    ops = sg.operations()
    absent = np.array([ops.is_systematically_absent([int(v) for v in h]) for h in rep])
    i_orbit[absent] = 0.0
    return i_orbit[inv], rep, i_orbit


def add_chloride(st: gemmi.Structure, n: int, rng: np.random.Generator) -> None:
    """Add ``n`` chloride ions (chain "B", B 25 Å², occupancy 1) 4 Å outside the chain's
    radius of gyration, in random directions from its centre (anomalous scatterers)."""
    pos = np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r])
    c = pos.mean(0)
    rg = math.sqrt(((pos - c) ** 2).sum(1).mean())
    chain = gemmi.Chain("B")
    for i in range(n):
        v = rng.normal(size=3)
        v *= (rg + 4.0) / np.linalg.norm(v)
        res = gemmi.Residue()
        res.name = "CL"
        res.seqid = gemmi.SeqId(i + 1, " ")
        at = gemmi.Atom()
        at.name = "CL"
        at.element = gemmi.Element("Cl")
        at.pos = gemmi.Position(*(c + v))
        at.b_iso = 25.0
        at.occ = 1.0
        res.add_atom(at)
        chain.add_residue(res)
    st[0].add_chain(chain)
    st.setup_entities()


def anomalous_intensities(st: gemmi.Structure, hkl: np.ndarray, wavelength_A: float
                          ) -> tuple[np.ndarray, np.ndarray, dict]:
    """|F(h)|² with anomalous scattering for every row of ``hkl`` (n, 3).

    F(+) = F(h_c) and F(−) = F(−h_c) of each Friedel orbit representative h_c
    (:func:`canonical_hkl`, with Friedel) from :func:`anomalous_physics.structure_factors`;
    a row h gets I(+) when it is a rotation of h_c (same :func:`canonical_hkl` without
    Friedel), else I(−). Returns (I (n,), h_c (m, 3), {"i_plus", "i_minus", "i_mean",
    "centric" (m,)}); systematic absences 0, centric I(−) = I(+) exactly.
    """
    canon = canonical_hkl(hkl, SPACE_GROUP)
    _, first, inv = np.unique(hkl_key(canon), return_index=True, return_inverse=True)
    rep = canon[first]
    i_plus = np.abs(ap_phys.structure_factors(st, rep, SPACE_GROUP, wavelength_A)) ** 2
    i_minus = np.abs(ap_phys.structure_factors(st, -rep, SPACE_GROUP, wavelength_A)) ** 2
    ops = gemmi.find_spacegroup_by_number(SPACE_GROUP).operations()
    hl = [[int(v) for v in h] for h in rep]
    absent = np.array([ops.is_systematically_absent(h) for h in hl])
    centric = np.array([ops.is_reflection_centric(h) for h in hl])
    i_plus[absent] = 0.0
    i_minus[absent] = 0.0
    i_minus[centric] = i_plus[centric]
    plus = hkl_key(canonical_hkl(hkl, SPACE_GROUP, friedel=False)) == hkl_key(
        canonical_hkl(rep[inv], SPACE_GROUP, friedel=False))
    i_hkl = np.where(plus, i_plus[inv], i_minus[inv])
    return i_hkl, rep, {"i_plus": i_plus, "i_minus": i_minus,
                        "i_mean": 0.5 * (i_plus + i_minus), "centric": centric.astype(np.uint8)}


def event_factors(p: SimParams, ev: dict) -> dict:
    """Sensor efficiency ``qe`` and sample ``transmission`` of every event (n,); ones where
    the effect is off (``sensor_qe``, ``absorption_mu_per_mm`` > 0)."""
    s1 = ev["s1"]
    n = len(s1)
    qe = np.ones(n)
    if p.sensor_qe:  # untilted detector: sensor normal along the beam (z)
        qe = ap_phys.sensor_qe(np.maximum(s1[:, 2], 1e-6), p.sensor_mu_per_mm,
                               p.sensor_thickness_mm)
    tr = np.ones(n)
    if p.absorption_mu_per_mm > 0 and n:
        R = rotation_matrix(np.asarray(p.axis, float), ev["phi"])
        pts = ap_phys.ellipsoid_points(p.crystal_semi_axes_mm, p.absorption_points,
                                       p.seed + 3)
        tr = ap_phys.ellipsoid_transmission(np.array([0.0, 0.0, 1.0]), s1, R,
                                            p.crystal_semi_axes_mm, p.absorption_mu_per_mm,
                                            pts)
    return {"qe": qe, "transmission": tr}


# ----------------------------------------------------------------------------- geometry

def rotation_matrix(axis: np.ndarray, ang: np.ndarray) -> np.ndarray:
    """Right-handed rotation(s) by ``ang`` (rad) about unit ``axis``: (..., 3, 3)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    ang = np.asarray(ang, float)[..., None, None]
    return np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * (K @ K)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rocking_cdf(x: np.ndarray, w: float, sig: float) -> np.ndarray:
    """CDF of a top-hat of full width ``w`` convolved with N(0, sig²) (same units as x)."""

    def G(u):
        z = u / sig
        return u * ndtr(z) + sig * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    if w <= 0:
        return ndtr(x / sig)
    return (G(x + 0.5 * w) - G(x - 0.5 * w)) / w


def diffraction_events(p: SimParams, UB: np.ndarray, hkl: np.ndarray) -> dict:
    """Both Ewald-sphere crossings of every hkl (φ in rad, unwrapped to the sweep)."""
    lam = p.wavelength_A
    s0 = np.array([0.0, 0.0, 1.0 / lam])
    e = np.asarray(p.axis, float) / np.linalg.norm(p.axis)
    r0 = hkl @ UB.T  # (n, 3) at φ = 0
    r_par = (r0 @ e)[:, None] * e
    r_perp = r0 - r_par
    r_x = np.cross(e, r_perp)
    a = r_par @ s0
    b = r_perp @ s0
    c = r_x @ s0
    rhs = -0.5 * np.einsum("ij,ij->i", r0, r0) - a
    amp = np.hypot(b, c)
    ok = (amp > 1e-12) & (np.abs(rhs) < amp)
    ph0 = np.arctan2(c, b)
    dphi = np.arccos(np.clip(rhs / np.where(amp > 0, amp, 1), -1, 1))
    out = []
    for sgn in (+1, -1):
        phi = ph0 + sgn * dphi
        out.append((np.nonzero(ok)[0], phi[ok]))
    idx = np.concatenate([o[0] for o in out])
    phi = np.concatenate([o[1] for o in out])
    # φ relative to the sweep start, wrapped into [start − 180°, start + 180°) + 180° …
    st = math.radians(p.start_deg)
    span = math.radians(p.n_images * p.osc_deg)
    phi = st + np.mod(phi - st + math.radians(5.0), 2 * math.pi) - math.radians(5.0)
    keep = phi < st + span + math.radians(5.0)
    idx, phi = idx[keep], phi[keep]
    R = rotation_matrix(e, phi)
    r = np.einsum("nij,nj->ni", R, r0[idx])
    s1 = s0 + r
    s1n = s1 / np.linalg.norm(s1, axis=1, keepdims=True)
    s0n = s0 / np.linalg.norm(s0)
    cr = np.cross(s1n, s0n)
    zeta = (cr @ e) / np.maximum(np.linalg.norm(cr, axis=1), 1e-12)
    sin_e_perp = np.linalg.norm(cr, axis=1)  # sin 2θ
    # Lorentz: 1/|e·(ŝ1 × ŝ0)|
    lorentz = 1.0 / np.maximum(np.abs(cr @ e), 1e-6)
    # polarisation (horizontal E field along x with fraction p): Kahn et al. 1982
    px = p.polarization
    pol = px * (1 - s1n[:, 0] ** 2) + (1 - px) * (1 - s1n[:, 1] ** 2)
    # detector intersection (untilted, normal along z)
    D = p.distance_mm
    t = D / np.where(s1n[:, 2] > 1e-6, s1n[:, 2], np.nan)
    X = s1n[:, 0] * t
    Y = s1n[:, 1] * t
    x = p.beam_center_px[0] + X / p.pixel_mm
    y = p.beam_center_px[1] + Y / p.pixel_mm
    return {"idx": idx, "phi": phi, "zeta": zeta, "lorentz": lorentz, "pol": pol, "x": x,
            "y": y, "sin2t": sin_e_perp, "s1": s1n}


# ----------------------------------------------------------------------------- rendering

def spot_weights(p: SimParams, x: np.ndarray, y: np.ndarray, sin2t: np.ndarray,
                 half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-integrated fractions of each spot in a (2·half+1)² box.

    Returns (x0 (n,), y0 (n,), w (n, B, B)) with box pixel (j, i) at (y0 + j, x0 + i).
    """
    n = len(x)
    B = 2 * half + 1
    x0 = np.rint(x).astype(np.int64) - half
    y0 = np.rint(y).astype(np.int64) - half
    ss = p.subsample
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    # sample points (B*ss) along each axis relative to the spot centre
    gx = (x0[:, None] + np.repeat(np.arange(B), ss)[None] + np.tile(sub, B)[None]) - x[:, None]
    gy = (y0[:, None] + np.repeat(np.arange(B), ss)[None] + np.tile(sub, B)[None]) - y[:, None]
    # radial direction in pixel coordinates
    rx = x - p.beam_center_px[0]
    ry = y - p.beam_center_px[1]
    rn = np.hypot(rx, ry)
    cx = np.where(rn > 0, rx / np.maximum(rn, 1e-9), 1.0)
    cy = np.where(rn > 0, ry / np.maximum(rn, 1e-9), 0.0)
    st = p.sigma_px
    sr = p.sigma_px + p.radial_growth_px * sin2t
    u = gx[:, None, :] * cx[:, None, None] + gy[:, :, None] * cy[:, None, None]  # radial
    v = -gx[:, None, :] * cy[:, None, None] + gy[:, :, None] * cx[:, None, None]  # tangential
    w = np.zeros((n, B * ss, B * ss))
    for frac, k in ((1.0 - p.tail_fraction, 1.0), (p.tail_fraction, p.tail_scale)):
        a = (sr * k)[:, None, None]
        b = st * k
        w += frac * np.exp(-0.5 * ((u / a) ** 2 + (v / b) ** 2)) / (2 * math.pi * a * b)
    w = w.reshape(n, B, ss, B, ss).sum(axis=(2, 4)) / (ss * ss)
    return x0, y0, w


def background_image(p: SimParams) -> np.ndarray:
    yy, xx = np.mgrid[0:p.ny, 0:p.nx].astype(np.float64)
    X = (xx - p.beam_center_px[0]) * p.pixel_mm
    Y = (yy - p.beam_center_px[1]) * p.pixel_mm
    r = np.hypot(X, Y)
    tth = np.arctan2(r, p.distance_mm)
    d = p.wavelength_A / (2 * np.sin(np.maximum(tth, 1e-6) / 2))
    ring = np.exp(-0.5 * ((1 / d - 1 / 3.7) / 0.035) ** 2)
    cos3 = (p.distance_mm / np.hypot(r, p.distance_mm)) ** 3  # solid angle per pixel
    air = p.air / np.maximum(r / p.pixel_mm, 8.0)
    return (p.background + p.water_ring * ring) * cos3 + air


def simulate(p: SimParams, out: Path, log=print) -> tuple[Path, Path]:
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(p.seed)
    st = pseudo_protein(p.n_atoms, rng)
    if p.n_cl:
        add_chloride(st, p.n_cl, np.random.default_rng(p.seed + 1))
    st.write_pdb(str(out / "model.pdb"))
    hkl = all_hkl(CELL, p.d_min)
    anom = None
    if p.anomalous:
        i_true, rep, anom = anomalous_intensities(st, hkl, p.wavelength_A)
        i_orbit = anom["i_mean"]
    else:
        i_true, rep, i_orbit = intensities(st, hkl)
    log(f"sim: {len(hkl)} hkl, {len(rep)} orbits, |F|² in {time.time() - t0:.1f} s")
    U = random_rotation(rng)
    UB = U @ b_matrix(CELL)
    ev = diffraction_events(p, UB, hkl)
    on = (np.isfinite(ev["x"]) & (ev["x"] > -5) & (ev["x"] < p.nx + 4)
          & (ev["y"] > -5) & (ev["y"] < p.ny + 4))
    ev = {k: v[on] for k, v in ev.items()}
    idx = ev["idx"]
    ev.update(event_factors(p, ev))
    osc = math.radians(p.osc_deg)
    st0 = math.radians(p.start_deg)
    # rocking curve over each image: η = |ζ| (φ − φc) (deg)
    az = np.abs(ev["zeta"])
    fc = (ev["phi"] - st0) / osc  # centroid frame coordinate of the crossing
    # frames touched: where the CDF moves by > 1e-5
    reach_deg = (0.5 * p.divergence_deg + 5 * p.mosaicity_deg) / np.maximum(az, 0.02)
    reach = reach_deg / p.osc_deg
    f_lo = np.maximum(np.floor(fc - reach), 0).astype(np.int64)
    f_hi = np.minimum(np.floor(fc + reach), p.n_images - 1).astype(np.int64)
    valid = f_hi >= f_lo
    n_ev = len(fc)
    # photons per unit scale: |F|² L P, sensor efficiency, sample transmission
    lp_photons = i_true[idx] * ev["lorentz"] * ev["pol"] * ev["qe"] * ev["transmission"]
    # partial table
    ev_id, img = [], []
    for k in np.nonzero(valid)[0]:
        rng_f = np.arange(f_lo[k], f_hi[k] + 1)
        ev_id.append(np.full(len(rng_f), k))
        img.append(rng_f)
    ev_id = np.concatenate(ev_id)
    img = np.concatenate(img)
    a_deg = (st0 + img * osc - ev["phi"][ev_id]) * 180 / math.pi * az[ev_id]
    b_deg = (st0 + (img + 1) * osc - ev["phi"][ev_id]) * 180 / math.pi * az[ev_id]
    frac = (rocking_cdf(b_deg, p.divergence_deg, p.mosaicity_deg)
            - rocking_cdf(a_deg, p.divergence_deg, p.mosaicity_deg))
    keep = frac > 1e-5
    ev_id, img, frac = ev_id[keep], img[keep], frac[keep]
    unit = lp_photons[ev_id] * frac
    # calibrate the scale: spots_ge50 partials per image with >= 50 expected photons
    srt = np.sort(unit)[::-1]
    n_target = int(p.spots_ge50 * p.n_images)
    scale = 50.0 / srt[min(n_target, len(srt) - 1)]
    k_img = ap_phys.image_scales(p.n_images, p.image_scale_amp, p.image_scale_jitter,
                                 p.seed + 2)
    exp_ph = unit * scale * k_img[img]
    log(f"sim: {n_ev} events, {len(ev_id)} partials, scale {scale:.4g} photons/e², "
        f"{time.time() - t0:.1f} s")
    # render: per image, sum spots onto the background
    half = math.ceil(3.0 * p.tail_scale * (p.sigma_px + p.radial_growth_px))
    bg = background_image(p)
    order = np.argsort(img, kind="stable")
    ev_id, img, exp_ph = ev_id[order], img[order], exp_ph[order]
    starts = np.searchsorted(img, np.arange(p.n_images + 1))
    recorded = np.zeros(len(ev_id))
    B = 2 * half + 1
    jj, ii = np.mgrid[0:B, 0:B]
    images = np.empty((p.n_images, p.ny, p.nx), dtype=np.int32)
    for i in range(p.n_images):
        s, e = starts[i], starts[i + 1]
        lam = bg * (1.0 + 0.05 * math.sin(2 * math.pi * i / max(p.n_images, 1)))
        if e > s:
            flat = np.zeros(p.ny * p.nx)
            for cs in range(s, e, 256):
                ce = min(cs + 256, e)
                k = ev_id[cs:ce]
                x0, y0, w = spot_weights(p, ev["x"][k], ev["y"][k], ev["sin2t"][k], half)
                yy = y0[:, None, None] + jj[None]
                xx = x0[:, None, None] + ii[None]
                inside = (yy >= 0) & (yy < p.ny) & (xx >= 0) & (xx < p.nx)
                val = w * exp_ph[cs:ce, None, None]
                recorded[cs:ce] = np.where(inside, val, 0).sum(axis=(1, 2))
                flat += np.bincount((yy * p.nx + xx)[inside], weights=val[inside],
                                    minlength=p.ny * p.nx)
            lam = lam + flat.reshape(p.ny, p.nx)
        images[i] = rng.poisson(lam).astype(np.int32)
    log(f"sim: rendered {p.n_images} images in {time.time() - t0:.1f} s; "
        f"{np.mean(np.diff(starts)):.0f} partials/image, "
        f"{np.sum(recorded >= 50) / p.n_images:.0f} >= 50 photons/image")
    # per-event totals
    ph_ev = np.bincount(ev_id, weights=recorded, minlength=n_ev)
    fr_ev = np.bincount(ev_id, weights=frac[order], minlength=n_ev)
    first = np.full(n_ev, -1)
    last = np.full(n_ev, -1)
    seen = np.bincount(ev_id, minlength=n_ev) > 0
    fmin = np.full(n_ev, 10 ** 9)
    np.minimum.at(fmin, ev_id, img)
    fmax = np.full(n_ev, -1)
    np.maximum.at(fmax, ev_id, img)
    first[seen] = fmin[seen]
    last[seen] = fmax[seen]
    # write the master with jfx's NXmx writer (only io: images + metadata)
    master = write_master(p, images, out)
    truth = out / "sim_truth.h5"
    d = 1.0 / np.linalg.norm(hkl[idx] @ b_matrix(CELL).T, axis=1)
    with h5py.File(truth, "w") as f:
        f.attrs["params"] = json.dumps(dataclasses.asdict(p))
        f.attrs["space_group"] = SPACE_GROUP
        f.attrs["cell"] = np.array(CELL)
        f.attrs["scale"] = scale
        f.attrs["UB"] = UB
        g = f.create_group("events")
        # every event near the sweep (those never recorded have photons = 0, so that a
        # program's predictions at the sweep ends still find their truth)
        sel = seen | ((fc > -20) & (fc < p.n_images + 20))
        for name, val in (("h", hkl[idx, 0]), ("k", hkl[idx, 1]), ("l", hkl[idx, 2]),
                          ("phi_deg", np.degrees(ev["phi"])), ("frame", fc),
                          ("x", ev["x"]), ("y", ev["y"]), ("d", d),
                          ("i_true", i_true[idx]), ("lorentz", ev["lorentz"]),
                          ("polarization", ev["pol"]), ("zeta", ev["zeta"]),
                          ("qe", ev["qe"]), ("transmission", ev["transmission"]),
                          ("photons", ph_ev), ("fraction", fr_ev),
                          ("image_first", first), ("image_last", last)):
            g.create_dataset(name, data=np.asarray(val)[sel])
        remap = np.cumsum(sel) - 1
        g = f.create_group("partials")
        g.create_dataset("event", data=remap[ev_id].astype(np.int32))
        g.create_dataset("image", data=img.astype(np.int32))
        g.create_dataset("photons", data=recorded)
        g = f.create_group("merged")
        g.create_dataset("h", data=rep[:, 0])
        g.create_dataset("k", data=rep[:, 1])
        g.create_dataset("l", data=rep[:, 2])
        g.create_dataset("i_true", data=i_orbit)
        g.create_dataset("d", data=1.0 / np.linalg.norm(rep @ b_matrix(CELL).T, axis=1))
        if anom is not None:
            for name in ("i_plus", "i_minus", "centric"):
                g.create_dataset(name, data=anom[name])
        f.create_group("images").create_dataset("scale", data=k_img)
    log(f"sim: wrote {master} and {truth} in {time.time() - t0:.1f} s")
    return master, truth


def write_master(p: SimParams, images: np.ndarray, out: Path, stills: bool = False) -> Path:
    """Jungfraujoch-layout NXmx with the images in the master (``layout="single"``);
    ``stills``: no goniometer (no omega scan) and the beam's bandwidth."""
    from jfx.io.jfjoch_writer import write_jungfraujoch  # io only: the file layout
    from jfx.models.geometry import Beam, Detector, Geometry, Goniometer

    geo = Geometry(
        beam=Beam.create(p.wavelength_A, polarization_fraction=p.polarization),
        detector=Detector.create(p.distance_mm, p.beam_center_px, (p.ny, p.nx),
                                 pixel_size_mm=p.pixel_mm,
                                 sensor_thickness_mm=p.sensor_thickness_mm,
                                 sensor_material="Si"),
        goniometer=None if stills else Goniometer.create(p.axis, p.start_deg, p.osc_deg))
    kw = {"bandwidth_fwhm": p.bandwidth_fwhm} if stills else {}
    return write_jungfraujoch(out / "sim", iter(images), n_images=p.n_images, geometry=geo,
                              **kw,
                              dtype="int32", layout="single", codec=p.codec,
                              unit_cell=CELL, space_group=SPACE_GROUP,
                              saturation_value=2 ** 30, sample_name="peer_comparison sim")


# ----------------------------------------------------------------------------- stills

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclasses.dataclass
class StillsParams(SimParams):
    """Stills run parameters (issue 13): :class:`SimParams` geometry plus the crystal spread."""

    n_images: int = 300
    bandwidth_fwhm: float = 0.002
    domain_invA: float = 2e-4
    cell_spread: float = 0.002
    scale_sigma: float = 0.3
    hit_rate: float = 0.8
    min_partiality: float = 1e-3
    spots_ge50: float = 200.0
    seed: int = 13

    @staticmethod
    def preset(size: str) -> StillsParams:
        if size == "stills":
            return StillsParams()
        if size == "stills_small":
            return StillsParams(n_images=100)
        raise ValueError(f"unknown stills size {size!r} (stills_small, stills)")


def stills_partiality(r: np.ndarray, wavelength_A: float, mosaicity_deg: float,
                      domain_invA: float, bandwidth_fwhm: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ewald-offset Gaussian partiality of reciprocal-lattice points (lab frame).

    Args:
        r: (n, 3) reciprocal-lattice vectors U B h (Å⁻¹), beam s0 = (0, 0, 1/λ).
        wavelength_A: mean wavelength λ (Å).
        mosaicity_deg: Gaussian σ of the angular mosaic spread θ_m (deg).
        domain_invA: mosaic-domain term (Å⁻¹), 1/domain size.
        bandwidth_fwhm: FWHM of the Gaussian band, relative (Δλ/λ).

    Returns:
        ``(P (n,), ε (n,) Å⁻¹, σ_ε (n,) Å⁻¹)``: ε = |s0 + r| − 1/λ and
        P = exp(−ε²/2σ_ε²), σ_ε² = (|r| θ_m)² + δ² + (|r|² λ σ_λ/(2λ))².
    """
    r = np.asarray(r, np.float64)
    k = 1.0 / wavelength_A
    s1 = r + np.array([0.0, 0.0, k])
    eps = np.linalg.norm(s1, axis=1) - k
    rr = np.linalg.norm(r, axis=1)
    s_rel = bandwidth_fwhm / FWHM_PER_SIGMA
    sig2 = ((rr * math.radians(mosaicity_deg)) ** 2 + domain_invA ** 2
            + (0.5 * rr * rr * wavelength_A * s_rel) ** 2)
    sig = np.sqrt(sig2)
    return np.exp(-0.5 * (eps / sig) ** 2), eps, sig


def _render(p: SimParams, lam: np.ndarray, x, y, sin2t, photons, half: int):
    """Expected-photon image ``lam`` plus the spots; returns (image λ, recorded photons)."""
    B = 2 * half + 1
    jj, ii = np.mgrid[0:B, 0:B]
    flat = np.zeros(p.ny * p.nx)
    recorded = np.zeros(len(x))
    for cs in range(0, len(x), 256):
        ce = min(cs + 256, len(x))
        x0, y0, w = spot_weights(p, x[cs:ce], y[cs:ce], sin2t[cs:ce], half)
        yy = y0[:, None, None] + jj[None]
        xx = x0[:, None, None] + ii[None]
        inside = (yy >= 0) & (yy < p.ny) & (xx >= 0) & (xx < p.nx)
        val = w * photons[cs:ce, None, None]
        recorded[cs:ce] = np.where(inside, val, 0).sum(axis=(1, 2))
        flat += np.bincount((yy * p.nx + xx)[inside], weights=val[inside],
                            minlength=p.ny * p.nx)
    return lam + flat.reshape(p.ny, p.nx), recorded


def _still_reflections(p: StillsParams, U: np.ndarray, cell, hkl: np.ndarray) -> dict:
    """Reflections of one crystal with P ≥ ``min_partiality`` that hit the detector."""
    r = hkl @ (U @ b_matrix(cell)).T
    P, eps, sig = stills_partiality(r, p.wavelength_A, p.mosaicity_deg, p.domain_invA,
                                    p.bandwidth_fwhm)
    sel = P >= p.min_partiality
    r, P, eps, sig, h = r[sel], P[sel], eps[sel], sig[sel], hkl[sel]
    s1n = r + np.array([0.0, 0.0, 1.0 / p.wavelength_A])
    s1n /= np.linalg.norm(s1n, axis=1, keepdims=True)
    px = p.polarization
    pol = px * (1 - s1n[:, 0] ** 2) + (1 - px) * (1 - s1n[:, 1] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = p.distance_mm / np.where(s1n[:, 2] > 1e-6, s1n[:, 2], np.nan)
    x = p.beam_center_px[0] + s1n[:, 0] * t / p.pixel_mm
    y = p.beam_center_px[1] + s1n[:, 1] * t / p.pixel_mm
    sin2t = np.sqrt(np.maximum(1 - s1n[:, 2] ** 2, 0))
    on = np.isfinite(x) & (x > -5) & (x < p.nx + 4) & (y > -5) & (y < p.ny + 4)
    return {"hkl": h[on], "P": P[on], "eps": eps[on], "sig": sig[on], "pol": pol[on],
            "x": x[on], "y": y[on], "sin2t": sin2t[on]}


def simulate_stills(p: StillsParams, out: Path, log=print) -> tuple[Path, Path]:
    """Stills run (see the module docstring); returns (master, truth) paths."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(p.seed)
    st = pseudo_protein(p.n_atoms, rng)
    st.write_pdb(str(out / "model.pdb"))
    hkl = all_hkl(tuple(c * 1.01 if i < 3 else c for i, c in enumerate(CELL)), p.d_min)
    i_true, rep, i_orbit = intensities(st, hkl)
    log(f"sim: {len(hkl)} hkl, {len(rep)} orbits, |F|² in {time.time() - t0:.1f} s")
    n = p.n_images
    hit = rng.random(n) < p.hit_rate
    g = np.exp(rng.normal(0.0, p.scale_sigma, n))
    cells = np.zeros((n, 6))
    Us = np.zeros((n, 3, 3))
    refl = []
    for i in range(n):
        if not hit[i]:
            continue
        f = 1.0 + rng.normal(0.0, p.cell_spread)
        cells[i] = [CELL[0] * f, CELL[1] * f, CELL[2] * f, 90.0, 90.0, 90.0]
        Us[i] = random_rotation(rng)
        refl.append((i, _still_reflections(p, Us[i], cells[i], hkl)))
    lp = (np.concatenate([_lookup(hkl, i_true, r["hkl"]) * r["P"] * r["pol"] for _, r in refl])
          if refl else np.zeros(0))
    srt = np.sort(lp)[::-1]
    n_target = int(p.spots_ge50 * max(len(refl), 1))
    K = 50.0 / srt[min(n_target, len(srt) - 1)] if len(srt) else 1.0
    log(f"sim: {int(hit.sum())} hits, {len(lp)} reflections, K {K:.4g} photons/e², "
        f"{time.time() - t0:.1f} s")
    half = math.ceil(3.0 * p.tail_scale * (p.sigma_px + p.radial_growth_px))
    bg = background_image(p)
    images = np.empty((n, p.ny, p.nx), dtype=np.int32)
    cols = {k: [] for k in ("image", "h", "k", "l", "partiality", "ewald_offset", "sigma_eps",
                            "photons", "x", "y", "i_true", "polarization")}
    by_img = dict(refl)
    for i in range(n):
        lam = bg
        if i in by_img:
            r = by_img[i]
            it = _lookup(hkl, i_true, r["hkl"])
            ph = K * g[i] * it * r["pol"] * r["P"]
            lam, rec = _render(p, bg, r["x"], r["y"], r["sin2t"], ph, half)
            for name, val in (("image", np.full(len(it), i)), ("h", r["hkl"][:, 0]),
                              ("k", r["hkl"][:, 1]), ("l", r["hkl"][:, 2]),
                              ("partiality", r["P"]), ("ewald_offset", r["eps"]),
                              ("sigma_eps", r["sig"]), ("photons", rec), ("x", r["x"]),
                              ("y", r["y"]), ("i_true", it), ("polarization", r["pol"])):
                cols[name].append(val)
        images[i] = rng.poisson(lam).astype(np.int32)
    cols = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    log(f"sim: rendered {n} stills in {time.time() - t0:.1f} s; "
        f"{np.sum(cols['photons'] >= 50) / max(int(hit.sum()), 1):.0f} >= 50 photons/hit")
    master = write_master(p, images, out, stills=True)
    truth = out / "sim_truth.h5"
    with h5py.File(truth, "w") as f:
        f.attrs["params"] = json.dumps(dataclasses.asdict(p))
        f.attrs["space_group"] = SPACE_GROUP
        f.attrs["cell"] = np.array(CELL)
        f.attrs["scale"] = K
        f.attrs["mode"] = "stills"
        go = f.create_group("observations")
        hk = np.stack([cols["h"], cols["k"], cols["l"]], 1).astype(np.int64)
        cols["d"] = 1.0 / np.linalg.norm(hk @ b_matrix(CELL).T, axis=1) if len(hk) else hk[:, 0]
        for k, v in cols.items():
            go.create_dataset(k, data=v)
        gi = f.create_group("images")
        gi.create_dataset("scale", data=g)
        gi.create_dataset("hit", data=hit)
        gi.create_dataset("cell", data=cells)
        gi.create_dataset("U", data=Us)
        gm = f.create_group("merged")
        for j, name in enumerate("hkl"):
            gm.create_dataset(name, data=rep[:, j])
        gm.create_dataset("i_true", data=i_orbit)
        gm.create_dataset("d", data=1.0 / np.linalg.norm(rep @ b_matrix(CELL).T, axis=1))
    log(f"sim: wrote {master} and {truth} in {time.time() - t0:.1f} s")
    return master, truth


def _lookup(hkl_all: np.ndarray, values: np.ndarray, hkl: np.ndarray) -> np.ndarray:
    """``values`` of the rows of ``hkl`` in ``hkl_all`` (every row must be present)."""
    ka = hkl_key(hkl_all)
    order = np.argsort(ka)
    pos = np.searchsorted(ka[order], hkl_key(hkl))
    return values[order[pos]]


def parse_value(cur, v: str):
    """``--set`` value ``v`` in the type of the current value ``cur`` (tuples: comma lists;
    bools: 1/0, true/false, yes/no, on/off)."""
    if isinstance(cur, tuple):
        return tuple(float(x) for x in v.split(","))
    if isinstance(cur, bool):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {v!r}")
    return type(cur)(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="small",
                    choices=["tiny", "small", "full", "anomalous_small", "anomalous",
                             "stills_small", "stills"])
    ap.add_argument("-o", "--out", default="/tmp/peer/sim")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override SimParams fields, e.g. n_images=30 mosaicity_deg=0.1")
    a = ap.parse_args(argv)
    stills = a.size.startswith("stills")
    p = StillsParams.preset(a.size) if stills else SimParams.preset(a.size)
    for kv in a.set:
        k, _, v = kv.partition("=")
        if not hasattr(p, k):
            print(f"error: unknown parameter {k!r}", file=sys.stderr)
            return 2
        try:
            setattr(p, k, parse_value(getattr(p, k), v))
        except ValueError as exc:
            print(f"error: {k}: {exc}", file=sys.stderr)
            return 2
    (simulate_stills if stills else simulate)(p, Path(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
