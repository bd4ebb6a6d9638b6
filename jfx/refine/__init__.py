"""Geometry refinement: presets (-r), parameter pytrees, residuals and the verb.

* :func:`~jfx.refine.refine.refine` — stills (per image, vmap-batched) or a rotation sweep
  (scan-static), with :class:`~jfx.refine.refine.RefineSpots` in and
  :class:`~jfx.refine.refine.RefineResult` out;
* :mod:`jfx.refine.params` — detector / beam / crystal parameter pytrees and the free mask;
* :mod:`jfx.refine.residuals` — position (and φ) residuals with robust losses;
* the solvers ``lm`` (Levenberg–Marquardt in JAX) and ``lbfgs`` (optax) are the shared layer
  :mod:`jfx.solvers`; the setting is ``refine.solver``.
"""

from jfx.lazy import lazy_exports

# re-exports load on first use (PEP 562): importing jfx.refine.settings stays free of JAX
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "RefineResult": "jfx.refine.refine",
    "RefineSpots": "jfx.refine.refine",
    "RefineStatus": "jfx.refine.refine",
    "refine": "jfx.refine.refine",
    "PixelRefineSettings": "jfx.refine.settings",
    "RefineSettings": "jfx.refine.settings",
})
