"""Shared data of the launcher tests: one small stills set and one small rotation sweep
(jfx.sim), each processed once in this process as the single run the parts are compared with.
The parts run in other processes (Hydra's joblib launcher, or SLURM jobs); they share a
compilation cache in a temporary folder ($JFX_CACHE_DIR), never the user's."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from jfx.sim.cli import main as simulate_main

STILLS_ARGS = ["-S", "96", "-M", "-r", "orientation"]
"""Stills: per-image refinement (a pooled detector is pooled per part: docs/scale-out.md)."""
ROTATION_ARGS = ["-R=8", "-S", "96", "-M"]


def run_process(argv: list[str]) -> tuple[int, str, str]:
    """``jfjoch_process`` in this process: (exit code, stdout, stderr)."""
    import jfx.cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = jfx.cli.process_main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def launcher_data(tmp_path_factory) -> Path:
    """16 lyso_serial stills (2 data files of 8) and a 24 × 0.5° lyso_rotation sweep."""
    d = tmp_path_factory.mktemp("launcher")
    assert simulate_main(["--preset", "lyso_serial", "-o", str(d / "st"), "--n-images", "16",
                          "--images-per-file", "8", "-q"]) == 0
    assert simulate_main(["--preset", "lyso_rotation", "-o", str(d / "rot"), "--n-images",
                          "24", "-q"]) == 0
    return d


@pytest.fixture(scope="session")
def part_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jaxcache")


@contextlib.contextmanager
def part_env(cache: Path):
    """The driver here without JAX's persistent cache; the parts (other processes) with a
    temporary one."""
    import jfx.cli

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jfx.cli, "enable_compilation_cache", lambda: None)
        mp.setenv("JFX_CACHE_DIR", str(cache))
        yield


@pytest.fixture(autouse=True)
def _part_env(part_cache):
    with part_env(part_cache):
        yield


@pytest.fixture(scope="session")
def single_runs(launcher_data, part_cache) -> dict[str, Path]:
    """The single runs (prefixes) of both data sets."""
    d = launcher_data
    out = {}
    with part_env(part_cache):
        for name, args in (("st", STILLS_ARGS), ("rot", ROTATION_ARGS)):
            prefix = d / f"single_{name}"
            rc, _, err = run_process([str(d / f"{name}_master.h5"), "-o", str(prefix), *args])
            assert rc == 0, err
            out[name] = prefix
    return out
