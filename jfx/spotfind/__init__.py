"""Spot finding: strong-pixel kernel (:mod:`jfx.spotfind.strong`), connected components
(:mod:`jfx.spotfind.label`), ice rings (:mod:`jfx.spotfind.ice`), the stage
(:mod:`jfx.spotfind.find`), the per-image statistics kernel (:mod:`jfx.spotfind.stats`; the
data type is :class:`jfx.models.images.ImageStats`) and settings."""

from jfx.spotfind.find import SpotFindResult, ThresholdSpotFinder, find_spots
from jfx.spotfind.ice import ICE_RINGS_A, on_ice_ring
from jfx.spotfind.label import label_strong
from jfx.spotfind.settings import ThresholdSpotFinderSettings
from jfx.spotfind.strong import strong_pixels

__all__ = [
    "ICE_RINGS_A",
    "SpotFindResult",
    "ThresholdSpotFinder",
    "ThresholdSpotFinderSettings",
    "find_spots",
    "label_strong",
    "on_ice_ring",
    "strong_pixels",
]
