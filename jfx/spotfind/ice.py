"""Hexagonal-ice (Ih) powder rings: ring list and flagging.

The ring list is the usual one of crystallographic data-processing programs (d spacings of the
strongest low-order reflections of hexagonal ice Ih, a = 4.497 Å, c = 7.322 Å; Röttger et al.
1994, Acta Cryst. B50, 644): (100) 3.897, (002) 3.669, (101) 3.441, (102) 2.671, (110) 2.249,
(103) 2.072, (200) 1.948, (112) 1.918, (201) 1.883, (202) 1.721 Å. A position with resolution
d is on a ring when |1/d − 1/d_ring| ≤ ``width_invA`` for some ring (width in Å⁻¹, default
0.01 Å⁻¹).
"""

from __future__ import annotations

import numpy as np

ICE_RINGS_A: tuple[float, ...] = (3.897, 3.669, 3.441, 2.671, 2.249, 2.072, 1.948, 1.918,
                                  1.883, 1.721)


def on_ice_ring(d_A: np.ndarray, width_invA: float = 0.01,
                rings_A: tuple[float, ...] = ICE_RINGS_A) -> np.ndarray:
    """Boolean array (shape of ``d_A``): resolution ``d_A`` (Å) lies within ``width_invA``
    (Å⁻¹, in 1/d) of an ice ring. NaN / non-positive d are never on a ring."""
    d = np.asarray(d_A)
    if d.dtype != np.float32:
        d = d.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(d > 0, 1.0 / d, np.nan)
    out = np.zeros(s.shape, dtype=bool)
    for r in rings_A:  # one pass per ring (no (…, n_rings) temporary)
        out |= np.abs(s - 1.0 / r) <= width_invA
    return out
