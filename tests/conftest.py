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


def missing_data(what: str, path: Path) -> str:
    """Skip reason that says how to supply the data: ``path`` (under the shared data directory,
    ``$JFX_SHARED_DATA`` or ``../shared/data`` next to the checkout)."""
    return (f"{what} not available: expected at {path} (set JFX_SHARED_DATA to the directory "
            "holding the project's shared data, default ../shared/data next to the checkout)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(missing_data("shared real data", SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_kernels():
    """After each test module: drop JAX's in-memory compiled kernels (each module compiles its
    own shapes; keeping all of them grew the suite's memory to ~7 GB)."""
    yield
    import sys

    if "jax" in sys.modules:
        import gc

        sys.modules["jax"].clear_caches()
        gc.collect()
