"""Typed data that flows between pipeline stages: immutable pytrees (geometry, lattice, spots,
reflections) and the host-side result types (per-image statistics, merged reflections and
merging statistics); pixel-value conventions of a frame dtype (:mod:`jfx.models.pixels`)."""

from jfx.models.geometry import Beam as Beam, Detector as Detector, Geometry as Geometry
from jfx.models.geometry import Goniometer as Goniometer
from jfx.models.images import ImageStats as ImageStats
from jfx.models.lattice import Lattice as Lattice
from jfx.models.merged import MergedReflections as MergedReflections
from jfx.models.merged import MergingStatistics as MergingStatistics
from jfx.models.reflections import ReflectionFlag as ReflectionFlag
from jfx.models.reflections import Reflections as Reflections
from jfx.models.spots import SpotList as SpotList
