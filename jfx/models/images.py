"""Per-image statistics of raw detector frames: the data type (host-side numpy).

Filled by spot finding (:func:`jfx.spotfind.stats.image_stats` defines every column and is
the reference kernel), written to ``/entry/image`` of ``_process.h5`` by
:mod:`jfx.io.process_h5`.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageStats:
    """Per-image statistics for n images (host-side numpy arrays).

    Attributes:
        number: (n,) int64 image numbers (0-based indices into the input file).
        max: (n,) int64 largest valid pixel (0 when fully masked).
        mean: (n,) float32 mean of valid pixels (NaN when fully masked).
        n_masked: (n,) int64 invalid pixels.
        n_saturated: (n,) int64 valid pixels at or above the saturation value.
        unreadable: (n,) bool image could not be read (corrupt compressed chunk, decoding
            error): processed as fully masked. Default: all False.
    """

    number: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    n_masked: np.ndarray
    n_saturated: np.ndarray
    unreadable: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = np.shape(self.number)
        if self.unreadable is None:
            object.__setattr__(self, "unreadable", np.zeros(n, bool))
        a = np.asarray(self.unreadable, dtype=bool)
        if a.shape != n:
            raise ValueError(f"ImageStats.unreadable has shape {a.shape}, expected {n}")
        object.__setattr__(self, "unreadable", a)
        for f, dt in (("number", np.int64), ("max", np.int64), ("mean", np.float32),
                      ("n_masked", np.int64), ("n_saturated", np.int64)):
            a = np.asarray(getattr(self, f), dtype=dt)
            if a.shape != n or a.ndim != 1:
                raise ValueError(f"ImageStats.{f} has shape {a.shape}, expected {n}")
            object.__setattr__(self, f, a)

    @staticmethod
    def concatenate(parts: list["ImageStats"]) -> "ImageStats":
        if not parts:
            return ImageStats(*(np.zeros(0) for _ in range(5)))
        return ImageStats(*(np.concatenate([getattr(p, f.name) for p in parts])
                            for f in dataclasses.fields(ImageStats)))
