"""Space groups and unit-cell checks (gemmi-backed, host side only).

:func:`space_group` is THE resolver of a space group given as an International Tables number,
a Hermann–Mauguin / Hall symbol or a :class:`gemmi.SpaceGroup`; :func:`bravais_of_space_group`
and :func:`centring_of_space_group` give its lattice type.

The checks validate user input (``-C/--unit-cell``, ``-S/--space-group``, cells stored in the
master file) before anything is jitted (:func:`check_cell_and_space_group`), and a refined
merging cell against the merging space group (:func:`check_cell_fits`, looser tolerances).
They raise :class:`ValueError` with a one-line message; the shell turns that into exit code 2.

Conventions: a cell is (a, b, c, α, β, γ) with lengths in Å and angles in degrees. A cell
"fits" a space group when it has the metric symmetry of the group's crystal system
(International Tables for Crystallography Vol. A, Table 2.1.2.1):

=============  ======================================================
triclinic      any cell
monoclinic     α = γ = 90° (unique axis b, the standard setting)
orthorhombic   α = β = γ = 90°
tetragonal     a = b, α = β = γ = 90°
trigonal       hexagonal axes: a = b, α = β = 90°, γ = 120°; rhombohedral
               lattices (R) also accept rhombohedral axes a = b = c, α = β = γ
hexagonal      a = b, α = β = 90°, γ = 120°
cubic          a = b = c, α = β = γ = 90°
=============  ======================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import gemmi
import numpy as np

from jfx.symmetry.niggli import symmetrized_cell


LENGTH_RTOL = 1e-3
"""Relative tolerance for equal cell lengths (a = b etc.)."""
ANGLE_TOL_DEG = 0.05
"""Absolute tolerance for fixed cell angles (90°, 120°), degrees."""


def space_group(sg: int | str | gemmi.SpaceGroup) -> gemmi.SpaceGroup:
    """The :class:`gemmi.SpaceGroup` of an International Tables number (1–230), a
    Hermann–Mauguin or Hall symbol (e.g. ``"P 43 21 2"``; a string of digits is a number), or
    a :class:`gemmi.SpaceGroup` (returned as is).

    Raises:
        ValueError: a number that is not an integer in 1–230, an unknown symbol, or another
            type (one-line message).
    """
    if isinstance(sg, gemmi.SpaceGroup):
        return sg
    if isinstance(sg, str) and not sg.strip().isdigit():
        found = gemmi.find_spacegroup_by_name(sg.strip())
        if found is None:
            raise ValueError(f"unknown space group {sg!r}")
        return found
    try:
        n = int(sg)
    except (TypeError, ValueError):
        raise ValueError(f"space group must be a number 1-230 or a symbol, got {sg!r}") from None
    if (not isinstance(sg, str) and n != sg) or not 1 <= n <= 230:
        raise ValueError(f"space group must be a number 1-230, got {sg!r}")
    found = gemmi.find_spacegroup_by_number(n)
    if found is None:  # pragma: no cover - gemmi knows all 230
        raise ValueError(f"unknown space group {n}")
    return found


def crystal_system(number: int | str | gemmi.SpaceGroup) -> str:
    """Crystal system name (``"triclinic"`` … ``"cubic"``) of space group ``number``."""
    return space_group(number).crystal_system_str()


def validate_unit_cell(cell: Sequence[float]) -> tuple[float, ...]:
    """Check that ``cell`` is six numbers describing a geometrically possible cell.

    Args:
        cell: (a, b, c, α, β, γ), Å and degrees.

    Returns:
        The cell as a tuple of 6 floats.

    Raises:
        ValueError: wrong length, non-finite or non-positive values, angles outside
            (0°, 180°), or angles that do not form a cell (non-positive metric volume).
    """
    try:
        values = tuple(float(v) for v in cell)
    except (TypeError, ValueError):
        raise ValueError(
            f"unit cell must be 6 numbers a,b,c,alpha,beta,gamma, got {cell!r}") from None
    if len(values) != 6:
        raise ValueError(
            f"unit cell must be 6 numbers a,b,c,alpha,beta,gamma, got {len(values)} number(s)"
        )
    if not all(np.isfinite(values)):
        raise ValueError(f"unit cell values must be finite, got {list(values)}")
    a, b, c, al, be, ga = values
    if min(a, b, c) <= 0:
        raise ValueError(f"unit cell lengths must be > 0 A, got {a:g},{b:g},{c:g}")
    if not all(0.0 < x < 180.0 for x in (al, be, ga)):
        raise ValueError(f"unit cell angles must be in (0, 180) deg, got {al:g},{be:g},{ga:g}")
    ca, cb, cg = np.cos(np.deg2rad([al, be, ga]))
    # V² / (abc)² = 1 − cos²α − cos²β − cos²γ + 2 cosα cosβ cosγ must be > 0.
    v2 = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    if v2 <= 1e-9:
        raise ValueError(f"unit cell angles {al:g},{be:g},{ga:g} do not form a cell (zero volume)")
    return values


def cell_fits_space_group(cell: Sequence[float], number: int, *,
                          length_rtol: float = LENGTH_RTOL,
                          angle_tol_deg: float = ANGLE_TOL_DEG) -> bool:
    """Whether ``cell`` has the metric symmetry required by space group ``number``.

    See the module docstring for the rules and :data:`LENGTH_RTOL`, :data:`ANGLE_TOL_DEG`
    (the defaults; a refined, unconstrained cell is judged with looser ones).
    """
    a, b, c, al, be, ga = validate_unit_cell(cell)

    def _eq_len(x: float, y: float) -> bool:
        return abs(x - y) <= length_rtol * max(x, y)

    def _eq_ang(x: float, y: float) -> bool:
        return abs(x - y) <= angle_tol_deg

    sg = space_group(number)
    system = sg.crystal_system_str()
    right = _eq_ang(al, 90.0) and _eq_ang(be, 90.0) and _eq_ang(ga, 90.0)
    hex_axes = _eq_len(a, b) and _eq_ang(al, 90.0) and _eq_ang(be, 90.0) and _eq_ang(ga, 120.0)
    if system == "triclinic":
        return True
    if system == "monoclinic":
        return _eq_ang(al, 90.0) and _eq_ang(ga, 90.0)
    if system == "orthorhombic":
        return right
    if system == "tetragonal":
        return right and _eq_len(a, b)
    if system == "hexagonal":
        return hex_axes
    if system == "trigonal":
        if hex_axes:
            return True
        rhombohedral = _eq_len(a, b) and _eq_len(b, c) and _eq_ang(al, be) and _eq_ang(be, ga)
        return sg.centring_type() == "R" and rhombohedral
    if system == "cubic":
        return right and _eq_len(a, b) and _eq_len(b, c)
    raise ValueError(f"unknown crystal system {system!r}")  # pragma: no cover


def check_cell_and_space_group(
    cell: Sequence[float] | None, number: int | None
) -> tuple[tuple[float, ...] | None, int | None]:
    """Validate an optional cell and optional space group, and that they fit together.

    Returns:
        (cell as 6 floats or None, space-group number or None).

    Raises:
        ValueError: with a one-line message naming the problem.
    """
    out_cell = validate_unit_cell(cell) if cell is not None else None
    out_sg = None
    if number is not None:
        out_sg = space_group(number).number
    if out_cell is not None and out_sg is not None and not cell_fits_space_group(out_cell, out_sg):
        sg = space_group(out_sg)
        raise ValueError(
            f"unit cell {','.join(f'{v:g}' for v in out_cell)} does not fit space group "
            f"{out_sg} ({sg.hm}, {sg.crystal_system_str()})"
        )
    return out_cell, out_sg


def bravais_of_space_group(number: int) -> str:
    """Bravais type of space group ``number`` (1–230), from gemmi's crystal system + centring.

    Trigonal R groups → ``hR``, other trigonal and hexagonal → ``hP``; monoclinic C/I (any
    cell choice) → ``mC``; orthorhombic A/B/C → ``oC``.

    Raises:
        ValueError: ``number`` is not an integer 1–230.
    """
    sg = space_group(number)
    system = sg.crystal_system_str()
    centring = sg.centring_type()
    if system == "triclinic":
        return "aP"
    if system == "monoclinic":
        return "mP" if centring == "P" else "mC"
    if system == "orthorhombic":
        return {"P": "oP", "A": "oC", "B": "oC", "C": "oC", "I": "oI", "F": "oF"}[centring]
    if system == "tetragonal":
        return "tP" if centring == "P" else "tI"
    if system == "trigonal":
        return "hR" if centring == "R" else "hP"
    if system == "hexagonal":
        return "hP"
    return {"P": "cP", "I": "cI", "F": "cF"}[centring]


def centring_of_space_group(number: int) -> str:
    """Centring letter (P, A, B, C, I, F, R) of space group ``number`` in its gemmi setting."""
    return space_group(number).centring_type()


CELL_LENGTH_RTOL = 0.01
CELL_ANGLE_TOL_DEG = 1.0
"""A refined cell (triclinic when processed without ``-S``) fits a space group within 1 % and
1°; the merging cell is then symmetrised to the group's metric."""


def check_cell_fits(cell: np.ndarray, number: int) -> np.ndarray:
    """The merging cell: ``cell`` symmetrised to space group ``number``'s lattice metric
    (:func:`jfx.symmetry.niggli.symmetrized_cell`). ValueError (one line) when ``cell`` is
    further than 1 % / 1° from that metric (:func:`cell_fits_space_group`)."""
    c = tuple(float(v) for v in cell)
    if not cell_fits_space_group(c, int(number), length_rtol=CELL_LENGTH_RTOL,
                                 angle_tol_deg=CELL_ANGLE_TOL_DEG):
        sg = space_group(int(number))
        raise ValueError(f"unit cell {', '.join(f'{v:.2f}' for v in cell)} does not fit space "
                         f"group {sg.hm} ({sg.number}, {sg.crystal_system_str()})")
    return np.asarray(symmetrized_cell(np.asarray(c), bravais_of_space_group(int(number))),
                      np.float64)


def reference_mismatch(ref_space_group: int, ref_cell: Sequence[float],
                       data_space_group: int | None, data_cell: Sequence[float] | None, *,
                       max_rel: float = 0.02, max_deg: float = 2.0) -> str | None:
    """Why a reference (``-z``) cannot serve data of ``space_group`` / ``cell``, or None.

    A reference must have the data's point group (its intensities are compared reflection by
    reflection in the data's asymmetric unit; a reference in another group would re-symmetrise
    the data) and a cell within ``max_rel`` (lengths) and ``max_deg`` (angles) of the data's.
    Unknown data values (None, non-finite) are not tested.

    Args:
        ref_space_group, ref_cell: the reference's IT number and (a, b, c, α, β, γ) Å/deg.
        data_space_group, data_cell: the data's (``-S`` / file; ``-C`` / file) or None.
    """
    if data_space_group is not None:
        ref, dat = space_group(ref_space_group), space_group(data_space_group)
        pr, pd = ref.point_group_hm(), dat.point_group_hm()
        if pr != pd:
            return (f"its space group {ref.hm} (point group {pr}) does not match the data's "
                    f"{dat.hm} (point group {pd})")
    if data_cell is not None:
        c = np.asarray(data_cell, np.float64).reshape(-1)
        r = np.asarray(ref_cell, np.float64).reshape(-1)
        if c.size == 6 and np.all(np.isfinite(c)):
            rel = np.abs(r[:3] / c[:3] - 1.0)
            ang = np.abs(r[3:] - c[3:])
            if np.any(rel > max_rel) or np.any(ang > max_deg):
                fmt = lambda v: " ".join(f"{x:g}" for x in np.round(v, 2))  # noqa: E731
                return (f"its cell ({fmt(r)}) differs from the data's ({fmt(c)}) by more than "
                        f"{100 * max_rel:g} % / {max_deg:g} deg")
    return None

