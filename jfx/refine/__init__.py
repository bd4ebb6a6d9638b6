"""Geometry refinement: presets (-r), parameter pytrees, residuals and the verb.

* :func:`~jfx.refine.refine.refine` — stills (per image, vmap-batched) or a rotation sweep
  (scan-static), with :class:`~jfx.refine.refine.RefineSpots` in and
  :class:`~jfx.refine.refine.RefineResult` out;
* :mod:`jfx.refine.params` — detector / beam / crystal parameter pytrees and the free mask;
* :mod:`jfx.refine.residuals` — position (and φ) residuals with robust losses;
* the solvers ``lm`` (Levenberg–Marquardt in JAX) and ``lbfgs`` (optax) are the shared layer
  :mod:`jfx.solvers`; the setting is ``refine.solver``.
"""

from jfx.refine.refine import RefineResult as RefineResult
from jfx.refine.refine import RefineSpots as RefineSpots
from jfx.refine.refine import RefineStatus as RefineStatus
from jfx.refine.refine import refine as refine
from jfx.refine.settings import PixelRefineSettings as PixelRefineSettings
from jfx.refine.settings import RefineSettings as RefineSettings
