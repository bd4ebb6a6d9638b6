"""Shared scaling fixtures: one small simulated rotation run, processed once per session
(tests/scale/test_pipeline_scale.py, tests/scale/test_extending_docs.py)."""

from __future__ import annotations

import pytest

from jfx.cli import process_main
from jfx.sim.cli import main as simulate_main


@pytest.fixture(scope="session")
def rot(tmp_path_factory):
    """16 × 0.5° lysozyme sweep with a per-image scale drift, processed with -M -P rot."""
    d = tmp_path_factory.mktemp("rotscale")
    assert simulate_main(["--preset", "lyso_rotation", "-o", str(d / "r"), "--n-images", "16",
                          "-q", "--set", "image_scale_sigma=0.15"]) == 0
    return d


@pytest.fixture(scope="session")
def merged_run(rot):
    import contextlib
    import io

    out = rot / "m"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = process_main([str(rot / "r_master.h5"), "-o", str(out), "-R=10", "-S", "96",
                           "-M", "-P", "rot"])
    assert rc == 0
    return out, buf.getvalue()
