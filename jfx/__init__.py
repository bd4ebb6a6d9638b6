"""jfx: JAX-based, differentiable crystallographic data processing for Jungfraujoch data.

Importing jfx switches JAX to 64-bit mode (``jax_enable_x64``): geometry, refinement and
scaling run in float64; image kernels pass explicit float32 dtypes.
"""

import jax as _jax


_jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
