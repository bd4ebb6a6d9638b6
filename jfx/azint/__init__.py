"""Azimuthal integration of detector frames (``/entry/azint``), as Jungfraujoch does online:
the integrator and its kernel (:mod:`jfx.azint.integrator`) and the settings (config node
``azint``, :mod:`jfx.azint.settings`)."""

from jfx.azint.integrator import (
    AzimuthalIntegrator,
    AzintResult,
    pixel_correction,
    pixel_q_azimuth,
)
from jfx.azint.settings import AzintSettings

__all__ = [
    "AzimuthalIntegrator",
    "AzintResult",
    "AzintSettings",
    "pixel_correction",
    "pixel_q_azimuth",
]
