"""Pixel-value conventions of a frame dtype: which special values (error / saturation) can
match at all.

Detector frames keep their native integer dtype. A pixel equal to the *error value* is
invalid; a valid pixel at or above the *saturation value* is saturated. Used by every image
kernel (spot finding, per-image statistics, integration) so they agree on one rule.
"""

from __future__ import annotations

import numpy as np


def special_values(dtype: np.dtype, error_value: int | None,
                   saturation_value: float | None) -> tuple[bool, int, bool, int]:
    """(has_error, error, has_saturation, saturation) for a frame dtype, as in
    :func:`jfx.spotfind.stats.image_stats`: an error value outside the dtype's range never
    matches; a saturation value above the dtype's maximum never matches (a fractional
    saturation value s acts as ceil(s) on integer data)."""
    info = np.iinfo(dtype)
    has_err = error_value is not None and info.min <= int(error_value) <= info.max
    sat = None if saturation_value is None else int(np.ceil(float(saturation_value)))
    has_sat = sat is not None and sat <= info.max
    sat = max(sat, int(info.min)) if has_sat else 0
    return has_err, int(error_value) if has_err else 0, has_sat, sat
