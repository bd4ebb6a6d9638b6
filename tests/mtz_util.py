"""A reference MTZ for the tests: intensities (IMEAN) of given Miller indices."""

from __future__ import annotations

import gemmi
import numpy as np


def write_intensity_mtz(path, hkl, intensity, space_group: int = 96,
                        cell=(79.1, 79.1, 38.0, 90.0, 90.0, 90.0)) -> None:
    """Write ``hkl`` (m, 3) with IMEAN ``intensity`` (m,) in ``space_group`` / ``cell``."""
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.find_spacegroup_by_number(space_group)
    mtz.set_cell_for_all(gemmi.UnitCell(*cell))
    mtz.add_dataset("reference")
    mtz.add_column("IMEAN", "J")
    mtz.set_data(np.column_stack([np.asarray(hkl, np.float64),
                                  np.asarray(intensity, np.float64)]).astype(np.float32))
    mtz.write_to_file(str(path))
