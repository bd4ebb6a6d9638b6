"""Pixel boxes of predicted reflections on a still (host side, numpy; pure: no I/O).

Each row gets a ``B × B`` box (B = 2h + 1) centred on the pixel nearest its predicted
position; pixels off the detector, masked (``pixel_mask`` True = invalid), at the error
value or at/above the saturation value are unusable (weight 0). Weights are the inverse
Gaussian-approximation variances 1/max(b + max(c − b, 0), 1) of the fit
(:mod:`jfx.pixelrefine.fit`).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Boxes:
    """Boxes of R rows (numpy).

    Attributes:
        counts: (R, B, B) float32 photons (0 where unusable).
        usable: (R, B, B) bool.
        saturated: (R, B, B) bool pixels at/above the saturation value.
        x0, y0: (R,) float64 detector coordinates of box pixel (0, 0).
        r_px: (R, B, B) float64 distance of each pixel centre from the predicted position.
    """

    counts: np.ndarray
    usable: np.ndarray
    saturated: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    r_px: np.ndarray


def extract(frame: np.ndarray, x_px: np.ndarray, y_px: np.ndarray, half: int,
            pixel_mask: np.ndarray | None = None, error_value: float | None = None,
            saturation_value: float | None = None) -> Boxes:
    """Boxes of half-width ``half`` (px) around (x_px, y_px) (R,) on ``frame`` (ny, nx)."""
    f = np.asarray(frame)
    ny, nx = f.shape
    B = 2 * half + 1
    xi = np.rint(np.asarray(x_px, np.float64)).astype(np.int64) - half
    yi = np.rint(np.asarray(y_px, np.float64)).astype(np.int64) - half
    ar = np.arange(B)
    X = xi[:, None, None] + ar[None, None, :]
    Y = yi[:, None, None] + ar[None, :, None]
    on = (X >= 0) & (X < nx) & (Y >= 0) & (Y < ny)
    Xc = np.clip(X, 0, nx - 1)
    Yc = np.clip(Y, 0, ny - 1)
    v = f[Yc, Xc]
    bad = ~on
    if pixel_mask is not None:
        bad |= np.asarray(pixel_mask, bool)[Yc, Xc]
    if error_value is not None:
        bad |= v == error_value
    vf = v.astype(np.float64)
    sat = np.zeros(v.shape, bool)
    if saturation_value is not None:
        sat = on & (vf >= saturation_value)
    if np.issubdtype(v.dtype, np.signedinteger):
        bad |= v < 0
    if np.issubdtype(v.dtype, np.floating):
        bad |= ~np.isfinite(vf)
    usable = ~bad & ~sat
    dx = X - np.asarray(x_px, np.float64)[:, None, None]
    dy = Y - np.asarray(y_px, np.float64)[:, None, None]
    return Boxes(counts=np.where(usable, vf, 0.0).astype(np.float32), usable=usable,
                 saturated=sat & ~bad, x0=xi.astype(np.float64), y0=yi.astype(np.float64),
                 r_px=np.sqrt(dx * dx + dy * dy))


def fit_weights(counts: np.ndarray, background: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """(R, B, B) float32 fit weights 1/max(b + max(c − b, 0), 1), 0 where unusable."""
    c = np.asarray(counts, np.float64)
    b = np.asarray(background, np.float64)
    var = np.maximum(b + np.maximum(c - b, 0.0), 1.0)
    return np.where(usable, 1.0 / var, 0.0).astype(np.float32)


__all__ = ["Boxes", "extract", "fit_weights"]
