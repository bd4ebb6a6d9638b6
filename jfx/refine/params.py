"""Refinement parameterisation: geometry + crystal as a pytree of (mostly) free leaves.

A :class:`RefineParams` holds everything geometry refinement may move, in an internal form
that is unconstrained and well scaled for a least-squares solver:

* detector: beam centre (2,) px, distance (mm, along the beam to the beam-centre point) and
  two tilts (rad): a right-handed rotation by ``tilt_rad[0]`` about the reference fast axis
  followed by ``tilt_rad[1]`` about the reference slow axis. The detector plane turns about
  the beam-centre point, so beam centre and distance keep their meaning when tilts change.
* beam: wavelength (Å).
* crystal: a rotation vector (3,) (rad, axis × angle, lab frame) applied on top of a
  reference orientation ``U0``, and the unit cell in an internal form constrained by the
  lattice system (log lengths, angles in rad), see :data:`CELL_PARAMS`.

Reference quantities (reference fast/slow axes, ``U0``) are pytree leaves too, but no preset
ever frees them. The basis is ``basis = B(cell) @ (R(rotvec) @ U0)ᵀ`` with ``B`` the standard
(PDB/Rollett) orthogonalisation of :func:`jfx.models.lattice.cell_to_basis`; rows a, b, c (Å),
lab frame.

Which leaves are free is a *mask*: a pytree of the same structure with a Python bool per leaf
(:func:`free_mask`), derived from :attr:`jfx.refine.settings.RefineSettings.free`. The solvers
filter the leaves with it; there are no code branches per preset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass, static
from jfx.models.geometry import Beam, Detector, Geometry
from jfx.models.lattice import basis_to_cell, cell_to_basis
from jfx.physics.lattice import cell_from_internal, cell_to_basis_jax, rotvec_to_matrix
from jfx.refine.settings import RefineSettings
from jfx.symmetry.groups import bravais_of_space_group
from jfx.symmetry.niggli import best_rotation, symmetrized_cell

SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "hexagonal", "cubic")
CELL_PARAMS = {
    "triclinic": 6,  # log a, log b, log c, α, β, γ (rad)
    "monoclinic": 4,  # log a, log b, log c, β (rad); α = γ = 90°
    "orthorhombic": 3,  # log a, log b, log c
    "tetragonal": 2,  # log a (= log b), log c
    "hexagonal": 2,  # log a (= log b), log c; γ = 120° (hP and hR on hexagonal axes)
    "cubic": 1,  # log a
}
"""Number of internal cell parameters per lattice system."""

LEAF_OF_SETTING = {
    "detector.beam_center_px": ("detector", "beam_center_px"),
    "detector.distance_mm": ("detector", "distance_mm"),
    "detector.orientation": ("detector", "tilt_rad"),
    "beam.wavelength_A": ("beam", "wavelength_A"),
    "lattice.orientation": ("crystal", "rotvec"),
    "lattice.cell": ("crystal", "cell_u"),
}
"""``RefineSettings.free`` entries → (group, leaf) of :class:`RefineParams`. The profile
parameters ``beam.bandwidth_fwhm`` and ``crystal.mosaicity`` are not geometric; they are
ignored by geometry refinement (pixel refinement handles them)."""


def system_of_space_group(space_group: int | None) -> str:
    """Lattice system used for the cell constraint (``None`` → triclinic).

    hR groups use hexagonal axes (a = b, γ = 120°), as everywhere in jfx.
    """
    if space_group is None:
        return "triclinic"
    letter = bravais_of_space_group(int(space_group))[0]
    return {"a": "triclinic", "m": "monoclinic", "o": "orthorhombic", "t": "tetragonal",
            "h": "hexagonal", "c": "cubic"}[letter]


_BRAVAIS_OF_SYSTEM = {"triclinic": "aP", "monoclinic": "mP", "orthorhombic": "oP",
                      "tetragonal": "tP", "hexagonal": "hP", "cubic": "cP"}


@pytree_dataclass
class DetectorParams:
    """Detector leaves: beam_center_px (2,), distance_mm (), tilt_rad (2,); references
    fast0, slow0 (3,) (never free)."""

    beam_center_px: jnp.ndarray
    distance_mm: jnp.ndarray
    tilt_rad: jnp.ndarray
    fast0: jnp.ndarray
    slow0: jnp.ndarray


@pytree_dataclass
class BeamParams:
    """Beam leaves: wavelength_A ()."""

    wavelength_A: jnp.ndarray


@pytree_dataclass
class CrystalParams:
    """Crystal leaves: rotvec (3,) rad; cell_u (CELL_PARAMS[system],); reference U0 (3, 3)."""

    rotvec: jnp.ndarray
    cell_u: jnp.ndarray
    U0: jnp.ndarray
    system: str = static("triclinic")


@pytree_dataclass
class RefineParams:
    """All refinable quantities (see the module docstring). ``crystal`` may be ``None``."""

    detector: DetectorParams
    beam: BeamParams
    crystal: CrystalParams | None = None


# ------------------------------------------------------------------------------------------
# cells (host side; the differentiable rotation / cell → basis maps are
# jfx.physics.lattice: rotvec_to_matrix, cell_from_internal, cell_to_basis_jax)
# ------------------------------------------------------------------------------------------


def cell_to_internal(cell, system: str) -> np.ndarray:
    """Internal parameters of a (6,) cell (Å, deg), after symmetrising it for ``system``."""
    c = symmetrized_cell(np.asarray(cell, np.float64), _BRAVAIS_OF_SYSTEM[system])
    return _internal_of_symmetric_cell(c, system)


def _internal_of_symmetric_cell(c: np.ndarray, system: str) -> np.ndarray:
    la = np.log(c[:3])
    ang = np.deg2rad(c[3:])
    return {"triclinic": np.concatenate([la, ang]),
            "monoclinic": np.concatenate([la, ang[1:2]]),
            "orthorhombic": la,
            "tetragonal": la[[0, 2]],
            "hexagonal": la[[0, 2]],
            "cubic": la[:1]}[system]


# ------------------------------------------------------------------------------------------
# params ↔ models
# ------------------------------------------------------------------------------------------


def to_basis(params: RefineParams) -> jnp.ndarray:
    """(3, 3) real-space basis (rows a, b, c, Å, lab frame) of ``params.crystal``."""
    cr = params.crystal
    B = cell_to_basis_jax(cell_from_internal(cr.cell_u, cr.system))
    U = rotvec_to_matrix(cr.rotvec) @ cr.U0
    return B @ U.T


def to_geometry(params: RefineParams, template: Geometry) -> Geometry:
    """Geometry with the detector/beam of ``params``; everything else from ``template``
    (pixel size, shape, beam direction, polarisation, goniometer)."""
    d = params.detector
    R = (rotvec_to_matrix(d.slow0 * d.tilt_rad[1]) @ rotvec_to_matrix(d.fast0 * d.tilt_rad[0]))
    det = Detector(
        distance_mm=d.distance_mm,
        beam_center_px=d.beam_center_px,
        fast_axis=R @ d.fast0,
        slow_axis=R @ d.slow0,
        pixel_size_mm=template.detector.pixel_size_mm,
        shape=template.detector.shape,
        sensor_thickness_mm=template.detector.sensor_thickness_mm,
        sensor_material=template.detector.sensor_material,
        parallax=template.detector.parallax,
    )
    tb = template.beam
    beam = Beam(wavelength_A=params.beam.wavelength_A, direction=tb.direction,
                bandwidth_fwhm=tb.bandwidth_fwhm,
                polarization_fraction=tb.polarization_fraction,
                polarization_axis=tb.polarization_axis)
    return Geometry(beam=beam, detector=det, goniometer=template.goniometer)


def from_geometry(geometry: Geometry) -> tuple[DetectorParams, BeamParams]:
    """Detector and beam parameters of ``geometry`` (tilts 0: its axes are the reference)."""
    det, beam = geometry.detector, geometry.beam
    f64 = jnp.float64
    return (
        DetectorParams(beam_center_px=jnp.asarray(det.beam_center_px, f64),
                       distance_mm=jnp.asarray(det.distance_mm, f64),
                       tilt_rad=jnp.zeros(2, f64),
                       fast0=jnp.asarray(det.fast_axis, f64),
                       slow0=jnp.asarray(det.slow_axis, f64)),
        BeamParams(wavelength_A=jnp.asarray(beam.wavelength_A, f64)),
    )


def from_basis(basis, system: str) -> CrystalParams:
    """Crystal parameters of a (3, 3) basis (rows a, b, c, Å, lab frame; host-side numpy).

    The cell is symmetrised to ``system`` (:func:`jfx.symmetry.niggli.symmetrized_cell`); the
    reference orientation U0 is the rotation that best superposes ``B(cell)`` on ``basis``
    (Kabsch), and the rotation vector starts at 0.

    Raises:
        ValueError: ``system`` unknown, or the basis is not a finite right-handed cell.
    """
    if system not in CELL_PARAMS:
        raise ValueError(f"unknown lattice system {system!r} (known: {', '.join(SYSTEMS)})")
    b = np.asarray(basis, np.float64)
    if b.shape != (3, 3) or not np.all(np.isfinite(b)) or np.linalg.det(b) <= 0:
        raise ValueError("a lattice basis must be a finite right-handed (3, 3) matrix")
    cell = symmetrized_cell(basis_to_cell(b), _BRAVAIS_OF_SYSTEM[system])
    u = _internal_of_symmetric_cell(cell, system)
    U0 = best_rotation(cell_to_basis(cell), b)
    return CrystalParams(rotvec=np.zeros(3, np.float64), cell_u=np.asarray(u, np.float64),
                         U0=np.asarray(U0, np.float64), system=system)


def from_models(geometry: Geometry, basis=None, system: str = "triclinic") -> RefineParams:
    """:class:`RefineParams` of a geometry and (optionally) a (3, 3) basis."""
    det, beam = from_geometry(geometry)
    crystal = None if basis is None else from_basis(basis, system)
    return RefineParams(detector=det, beam=beam, crystal=crystal)


# ------------------------------------------------------------------------------------------
# free / fixed mask
# ------------------------------------------------------------------------------------------


def free_mask(params: RefineParams, settings: RefineSettings) -> RefineParams:
    """Mask pytree (same structure as ``params``, a Python bool per leaf): True = free.

    Only the leaves named by ``settings.free`` (through :data:`LEAF_OF_SETTING`) are free;
    references (fast0, slow0, U0) never are. Crystal leaves are fixed when
    ``params.crystal`` is ``None``.
    """
    free = {LEAF_OF_SETTING[p] for p in settings.free if p in LEAF_OF_SETTING}
    det = DetectorParams(**{f: ("detector", f) in free for f in
                            ("beam_center_px", "distance_mm", "tilt_rad")},
                         fast0=False, slow0=False)
    beam = BeamParams(wavelength_A=("beam", "wavelength_A") in free)
    crystal = None
    if params.crystal is not None:
        crystal = CrystalParams(rotvec=("crystal", "rotvec") in free,
                                cell_u=("crystal", "cell_u") in free, U0=False,
                                system=params.crystal.system)
    return RefineParams(detector=det, beam=beam, crystal=crystal)


def mask_leaves(mask: RefineParams) -> tuple[bool, ...]:
    """The mask as a hashable tuple of bools, in the leaf order of the params pytree."""
    return tuple(bool(m) for m in jax.tree_util.tree_leaves(mask))


def n_free(params: RefineParams, mask: RefineParams) -> int:
    """Number of free scalar parameters."""
    return int(sum(int(np.size(p)) for p, m in zip(jax.tree_util.tree_leaves(params),
                                                    mask_leaves(mask)) if m))
