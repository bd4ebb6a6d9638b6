"""Fixtures for the CLI tests: tiny Jungfraujoch masters written with the fixture writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jfx.io.jfjoch_writer import write_jungfraujoch
from jfx.models.geometry import Beam, Detector, Geometry, Goniometer


SHAPE = (24, 30)
SATURATION = 900


def tiny_geometry(rotation: bool) -> Geometry:
    gon = Goniometer.create((1.0, 0.0, 0.0), 10.0, 0.5) if rotation else None
    return Geometry(Beam.create(0.97), Detector.create(120.0, (14.25, 11.5), SHAPE), gon)


def make_master(tmp: Path, *, layout: str = "legacy", rotation: bool = True, dtype: str = "int32",
                n_images: int = 5, seed: int = 0, images_per_file: int = 2, name: str = "m",
                codec: str = "bslz4"):
    """Write a tiny master; returns (master path, frames (n, ny, nx) int64, mask bool, geometry).

    Frames hold Poisson-like counts 0..200, a few saturated pixels (≥ 900) and one hot pixel;
    the pixel mask marks row 0 and column 3 invalid.
    """
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 200, size=(n_images,) + SHAPE).astype(np.int64)
    frames[1, 5, 6] = 950
    frames[1, 7, 8] = 1000
    frames[2, 9, 9] = 899
    frames[3, 0, 5] = 5000  # under the mask: must not count
    mask = np.zeros(SHAPE, dtype=bool)
    mask[0, :] = True
    mask[:, 3] = True
    geo = tiny_geometry(rotation)
    master = write_jungfraujoch(
        tmp / name, frames, n_images=n_images, geometry=geo, dtype=dtype, layout=layout,
        pixel_mask=mask.astype(np.uint32), saturation_value=SATURATION,
        images_per_file=images_per_file, codec=codec,
    )
    return Path(master), frames, mask, geo


def numpy_stats(frames: np.ndarray, mask: np.ndarray, saturation: int = SATURATION):
    """Independent numpy expectation: (max, mean, n_masked, n_saturated) per frame."""
    out = []
    for f in frames:
        valid = ~mask
        v = f[valid]
        out.append((int(v.max()), np.float32(v.astype(np.float64).mean()), int((~valid).sum()),
                    int((v >= saturation).sum())))
    return [np.array(c) for c in zip(*out)]


@pytest.fixture
def master_factory(tmp_path):
    def factory(**kw):
        return make_master(tmp_path, **kw)
    return factory


@pytest.fixture(scope="module")
def shared_master(tmp_path_factory):
    """One legacy rotation master shared by the read-only tests of a module."""
    return make_master(tmp_path_factory.mktemp("master"))


@pytest.fixture(autouse=True)
def _no_global_compilation_cache(monkeypatch):
    """In-process CLI calls must not switch on JAX's persistent cache for the whole test
    session (the subprocess test checks the cache with its own $JFX_CACHE_DIR)."""
    import jfx.cli

    monkeypatch.setattr(jfx.cli, "enable_compilation_cache", lambda: None)
