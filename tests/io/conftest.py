"""Fixtures for the jfx.io tests: small geometries and small Jungfraujoch-layout files."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.io.jfjoch_writer import write_jungfraujoch
from jfx.models.geometry import Beam, Detector, Geometry, Goniometer

NY, NX, N_IMG = 64, 80, 5


def small_geometry(rotation: bool = True, tilted: bool = False) -> Geometry:
    """64×80 px detector, 75 µm, 120 mm; optionally a tilted detector (fast/slow rotated)."""
    fast, slow = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    if tilted:
        t = np.deg2rad(25.0)  # rotate about the lab x axis: slow and normal tilt
        fast = (1.0, 0.0, 0.0)
        slow = (0.0, np.cos(t), np.sin(t))
    det = Detector.create(distance_mm=120.0, beam_center_px=(37.25, 30.5), shape=(NY, NX),
                          pixel_size_mm=0.075, fast_axis=fast, slow_axis=slow,
                          sensor_thickness_mm=0.45)
    beam = Beam.create(0.9795, polarization_fraction=0.97, polarization_axis=(1.0, 0.0, 0.0))
    gon = Goniometer.create((-1.0, 0.0, 0.0), start_deg=12.5, increment_deg=0.25) if rotation else None
    return Geometry(beam=beam, detector=det, goniometer=gon)


def random_frames(dtype, n: int = N_IMG, seed: int = 0) -> np.ndarray:
    """(n, NY, NX) frames of ``dtype`` covering the valid range (incl. its extremes)."""
    dt = np.dtype(dtype)
    info = np.iinfo(dt)
    lo, hi = (info.min + 1, info.max) if dt.kind == "i" else (0, info.max - 1)
    rng = np.random.default_rng(seed)
    fr = rng.poisson(2.0, size=(n, NY, NX)).astype(np.int64)
    fr[:, 5, 7] = lo
    fr[:, 6, 7] = hi
    fr[:, 10, 20] = rng.integers(lo, hi, size=n, endpoint=True)
    return fr.astype(dt)


@pytest.fixture
def make_file(tmp_path):
    """make_file(name, **writer kwargs) → (master path, frames written)."""

    def _make(name="run", *, dtype="int32", layout="legacy", codec="bslz4", rotation=True,
              n=N_IMG, frames=None, **kw):
        geom = kw.pop("geometry", None) or small_geometry(rotation=rotation)
        fr = random_frames(dtype, n) if frames is None else frames
        master = write_jungfraujoch(tmp_path / name, iter(fr), n_images=n, geometry=geom,
                                    dtype=dtype, layout=layout, codec=codec, **kw)
        return master, fr

    return _make
