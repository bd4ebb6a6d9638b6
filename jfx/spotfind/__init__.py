"""Spot finding: per-image statistics (:mod:`jfx.spotfind.stats`) and spot-finder settings."""

from jfx.spotfind.settings import ThresholdSpotFinderSettings as ThresholdSpotFinderSettings
