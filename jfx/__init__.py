"""jfx: JAX-based, differentiable crystallographic data processing for Jungfraujoch data.

Importing jfx switches JAX to 64-bit mode (``jax_enable_x64``): geometry, refinement and
scaling run in float64; image kernels pass explicit float32 dtypes. JAX itself is not
imported here (``--help`` and usage errors answer without it): when it is not loaded yet,
``JAX_ENABLE_X64=1`` is set for it to read when it is; when it is, its config is updated.
"""

import os as _os
import sys as _sys

if "jax" in _sys.modules:
    _sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    _os.environ["JAX_ENABLE_X64"] = "1"

__version__ = "0.1.0"
