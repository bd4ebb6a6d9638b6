"""Shared test configuration.

* x64 is on (importing jfx enables it).
* ``shared_data`` points at ../shared/data (real data for regression tests); tests that
  need it skip when it is absent. Never copy those files into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import jfx  # noqa: F401  (enables x64)


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("JFX_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not available")
    return SHARED_DATA
