"""Scaling and merging: settings (scaling options, partiality-model selection)."""

from jfx.scale.settings import PartialitySettings as PartialitySettings
from jfx.scale.settings import ScaleSettings as ScaleSettings
