"""JUNGFRAU detector layouts as Jungfraujoch writes them (converted images).

A JUNGFRAU module in a Jungfraujoch converted image is 1030 × 514 pixels (fast × slow,
75 µm; the double-size inter-chip pixels are already expanded). Multi-module detectors are
assembled 2 modules per row with an 8 px horizontal gap between the two modules of a row and
36 px vertical gaps between rows: JUNGFRAU 1M = 2 modules = 514 × 2068 px (ny × nx),
4M = 8 modules = 2164 × 2068 px. Gap pixels carry no sensor: they are flagged in the
``pixel_mask`` and written as the error value.

``pixel_mask`` bits follow NXmx (``NXdetector/pixel_mask``): bit 0 gap, bit 1 dead,
bit 3 over-responding (hot). Pure numpy, no I/O.
"""

from __future__ import annotations

import dataclasses

import numpy as np


MODULE_NX = 1030
MODULE_NY = 514
GAP_X_PX = 8
GAP_Y_PX = 36
PIXEL_SIZE_MM = 0.075

MASK_GAP = np.uint32(1 << 0)
MASK_DEAD = np.uint32(1 << 1)
MASK_HOT = np.uint32(1 << 3)


@dataclasses.dataclass(frozen=True)
class DetectorLayout:
    """Pixel array description.

    Attributes:
        shape: (ny, nx) image size in pixels.
        pixel_mask: (ny, nx) uint32, nonzero = invalid pixel (NXmx bits above).
        modules: (m, 4) int module rectangles (y0, x0, ny, nx) in pixels.
        pixel_size_mm: pixel pitch.
        description: detector name for the file.
    """

    shape: tuple[int, int]
    pixel_mask: np.ndarray
    modules: np.ndarray
    pixel_size_mm: float = PIXEL_SIZE_MM
    description: str = "PSI JUNGFRAU"

    @property
    def valid(self) -> np.ndarray:
        """(ny, nx) bool: pixel carries data."""
        return self.pixel_mask == 0


def jungfrau_layout(n_modules: int) -> DetectorLayout:
    """Layout of a JUNGFRAU detector with ``n_modules`` modules (1, or an even number).

    1 module: 514 × 1030. Otherwise 2 modules per row (8 px gap), rows separated by 36 px.
    """
    if n_modules < 1 or (n_modules > 1 and n_modules % 2):
        raise ValueError(f"JUNGFRAU module count must be 1 or even, got {n_modules}")
    if n_modules == 1:
        rows, cols = 1, 1
    else:
        rows, cols = n_modules // 2, 2
    nx = cols * MODULE_NX + (cols - 1) * GAP_X_PX
    ny = rows * MODULE_NY + (rows - 1) * GAP_Y_PX
    mask = np.full((ny, nx), MASK_GAP, dtype=np.uint32)
    mods = []
    for r in range(rows):
        for c in range(cols):
            y0 = r * (MODULE_NY + GAP_Y_PX)
            x0 = c * (MODULE_NX + GAP_X_PX)
            mask[y0 : y0 + MODULE_NY, x0 : x0 + MODULE_NX] = 0
            mods.append((y0, x0, MODULE_NY, MODULE_NX))
    name = {1: "PSI JUNGFRAU 0.5M", 2: "PSI JUNGFRAU 1M", 8: "PSI JUNGFRAU 4M"}.get(
        n_modules, f"PSI JUNGFRAU ({n_modules} modules)"
    )
    return DetectorLayout((ny, nx), mask, np.array(mods, dtype=np.int64), description=name)


def plain_layout(ny: int, nx: int) -> DetectorLayout:
    """A gap-free (ny, nx) detector (tests, cropped detectors)."""
    return DetectorLayout(
        (int(ny), int(nx)),
        np.zeros((ny, nx), dtype=np.uint32),
        np.array([(0, 0, ny, nx)], dtype=np.int64),
        description="simulated pixel detector",
    )


def add_bad_pixels(
    layout: DetectorLayout, n_dead: int = 0, n_hot: int = 0, seed: int = 0
) -> DetectorLayout:
    """Copy of ``layout`` with ``n_dead`` dead and ``n_hot`` hot random sensor pixels masked."""
    rng = np.random.default_rng(seed)
    mask = layout.pixel_mask.copy()
    good = np.flatnonzero(mask.ravel() == 0)
    n = min(n_dead + n_hot, good.size)
    pick = rng.choice(good, size=n, replace=False)
    flat = mask.reshape(-1)
    flat[pick[:n_dead]] |= MASK_DEAD
    flat[pick[n_dead:n]] |= MASK_HOT
    return dataclasses.replace(layout, pixel_mask=mask)


def error_value(dtype) -> int:
    """Value of invalid pixels: type minimum (signed) or maximum (unsigned)."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min) if info.min < 0 else int(info.max)


def default_saturation(dtype) -> int:
    """Largest valid count for ``dtype`` (the error value excluded for unsigned types)."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.max) if info.min < 0 else int(info.max) - 1
