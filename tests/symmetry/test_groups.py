"""The space-group resolver and the cell checks (jfx.symmetry.groups)."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from jfx.symmetry.groups import (
    bravais_of_space_group,
    check_cell_and_space_group,
    check_cell_fits,
    crystal_system,
    space_group,
)


def test_space_group_parsing():
    assert space_group(96).number == 96
    assert space_group("P 43 21 2").number == 96
    assert space_group("19").number == 19
    with pytest.raises(ValueError):
        space_group(0)
    with pytest.raises(ValueError):
        space_group("X 9 9")


def test_space_group_resolver_accepts_numbers_symbols_and_groups():
    sg = gemmi.find_spacegroup_by_number(96)
    assert space_group(sg) is sg
    assert space_group(np.int64(19)).number == 19
    assert space_group(96.0).number == 96
    assert space_group(" P 43 21 2 ").number == 96
    assert crystal_system("P 43 21 2") == crystal_system(96) == "tetragonal"
    assert bravais_of_space_group("R 3") == "hR"


@pytest.mark.parametrize("bad,needle", [
    (0, "space group must be a number 1-230, got 0"),
    (231, "space group must be a number 1-230, got 231"),
    ("999", "space group must be a number 1-230, got '999'"),
    (96.5, "space group must be a number 1-230, got 96.5"),
    ("X 9 9", "unknown space group 'X 9 9'"),
    (None, "space group must be a number 1-230 or a symbol, got None"),
])
def test_space_group_resolver_errors_are_one_line(bad, needle):
    with pytest.raises(ValueError) as e:
        space_group(bad)
    assert str(e.value) == needle


def test_check_cell_and_space_group_takes_any_resolvable_group():
    assert check_cell_and_space_group(None, "P 43 21 2") == (None, 96)
    with pytest.raises(ValueError, match="does not fit space group 96"):
        check_cell_and_space_group((79, 80, 38, 90, 90, 90), 96)


def test_check_cell_fits_symmetrises_within_one_percent():
    cell = check_cell_fits(np.array([79.0, 79.4, 38.0, 90.3, 89.8, 90.0]), 96)
    np.testing.assert_allclose(cell, [79.2, 79.2, 38.0, 90.0, 90.0, 90.0])
    with pytest.raises(ValueError, match="does not fit space group P 43 21 2"):
        check_cell_fits(np.array([79.1, 70.0, 38.0, 90, 90, 90]), 96)
