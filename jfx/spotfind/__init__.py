"""Spot finding: strong-pixel kernel (:mod:`jfx.spotfind.strong`), connected components
(:mod:`jfx.spotfind.label`), ice rings (:mod:`jfx.spotfind.ice`), the stage
(:mod:`jfx.spotfind.find`), the per-image statistics kernel (:mod:`jfx.spotfind.stats`; the
data type is :class:`jfx.models.images.ImageStats`) and settings."""

from jfx.lazy import lazy_exports

# re-exports load on first use (PEP 562): importing jfx.spotfind.settings stays free of JAX
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "SpotFindResult": "jfx.spotfind.find",
    "ThresholdSpotFinder": "jfx.spotfind.find",
    "find_spots": "jfx.spotfind.find",
    "ICE_RINGS_A": "jfx.spotfind.ice",
    "on_ice_ring": "jfx.spotfind.ice",
    "label_strong": "jfx.spotfind.label",
    "ThresholdSpotFinderSettings": "jfx.spotfind.settings",
    "strong_pixels": "jfx.spotfind.strong",
})
