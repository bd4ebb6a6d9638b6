"""Crystal symmetry shared by every stage, the simulator and the file readers/writers
(host side, numpy + gemmi).

* :mod:`jfx.symmetry.groups` — the space-group resolver :func:`space_group` (number, symbol or
  :class:`gemmi.SpaceGroup`), crystal system and Bravais type of a group, and the unit-cell
  checks (:func:`check_cell_and_space_group` for user input, :func:`check_cell_fits` for a
  refined merging cell);
* :mod:`jfx.symmetry.asu` — reciprocal-space ASU mapping (:func:`to_asu`, :func:`asu_map`,
  :class:`AsuMap`) and :func:`d_spacing`;
* :mod:`jfx.symmetry.niggli` — Niggli reduction, the 14 Bravais types as data, metric
  deviation and symmetrisation of cells and bases;
* :mod:`jfx.symmetry.bravais` — the Bravais-lattice search (conventional settings, cell
  matching).
"""

from jfx.symmetry.asu import AsuMap, asu_map, d_spacing, to_asu
from jfx.symmetry.bravais import (
    Setting,
    best_setting,
    conventional_settings,
    match_cell,
    symmetrize,
)
from jfx.symmetry.groups import (
    bravais_of_space_group,
    cell_fits_space_group,
    centring_of_space_group,
    check_cell_and_space_group,
    check_cell_fits,
    crystal_system,
    space_group,
    validate_unit_cell,
)
from jfx.symmetry.niggli import (
    BRAVAIS_SYMBOLS,
    BRAVAIS_TYPES,
    BravaisType,
    best_rotation,
    cell_deviation,
    niggli_reduce,
    primitive_basis,
    symmetrize_basis,
    symmetrized_cell,
)

__all__ = [
    "BRAVAIS_SYMBOLS",
    "BRAVAIS_TYPES",
    "AsuMap",
    "BravaisType",
    "Setting",
    "asu_map",
    "best_rotation",
    "best_setting",
    "bravais_of_space_group",
    "cell_deviation",
    "cell_fits_space_group",
    "centring_of_space_group",
    "check_cell_and_space_group",
    "check_cell_fits",
    "conventional_settings",
    "crystal_system",
    "d_spacing",
    "match_cell",
    "niggli_reduce",
    "primitive_basis",
    "space_group",
    "symmetrize",
    "symmetrize_basis",
    "symmetrized_cell",
    "to_asu",
    "validate_unit_cell",
]
