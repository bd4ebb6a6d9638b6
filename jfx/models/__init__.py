"""Immutable typed pytrees: the data that flows between pipeline stages."""

from jfx.models.geometry import Beam as Beam, Detector as Detector, Geometry as Geometry
from jfx.models.geometry import Goniometer as Goniometer
from jfx.models.lattice import Lattice as Lattice
from jfx.models.reflections import ReflectionFlag as ReflectionFlag
from jfx.models.reflections import Reflections as Reflections
from jfx.models.spots import SpotList as SpotList
