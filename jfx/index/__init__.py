"""Indexing: settings for the indexers (-X), the known crystal (-C/-S) and rotation indexing."""

from jfx.index.settings import CrystalSettings as CrystalSettings
from jfx.index.settings import IndexSettings as IndexSettings
from jfx.index.settings import RotationSettings as RotationSettings
