"""Geometry refinement: presets (-r) and pixel-refinement settings."""

from jfx.refine.settings import PixelRefineSettings as PixelRefineSettings
from jfx.refine.settings import RefineSettings as RefineSettings
