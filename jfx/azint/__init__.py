"""Azimuthal integration of detector frames (``/entry/azint``), as Jungfraujoch does online:
the integrator and its kernel (:mod:`jfx.azint.integrator`) and the settings (config node
``azint``, :mod:`jfx.azint.settings`)."""

from jfx.lazy import lazy_exports

# re-exports load on first use (PEP 562): importing jfx.azint.settings stays free of JAX
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "AzimuthalIntegrator": "jfx.azint.integrator",
    "AzintResult": "jfx.azint.integrator",
    "pixel_correction": "jfx.azint.integrator",
    "pixel_q_azimuth": "jfx.azint.integrator",
    "AzintSettings": "jfx.azint.settings",
})
