"""Synthetic detector frames for the spot-finding tests: Poisson background (1 photon/pixel)
with Gaussian spots (σ = 1 px, 300 photons at the peak) at random positions at least 5 px
from the edges."""

from __future__ import annotations

import numpy as np


def spot_frames(rng: np.random.Generator, n: int, shape: tuple[int, int],
                spots_per_frame: int) -> np.ndarray:
    """(n, ny, nx) int32 frames with ``spots_per_frame`` spots each."""
    frames = rng.poisson(1.0, (n,) + tuple(shape)).astype(np.int32)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for i in range(n):
        for _ in range(spots_per_frame):
            cy, cx = rng.uniform(5, shape[0] - 5), rng.uniform(5, shape[1] - 5)
            frames[i] += rng.poisson(300 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
                                     ).astype(np.int32)
    return frames
