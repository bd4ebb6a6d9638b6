"""Interface of the spot-finder strategies (config group ``spotfind``).

A spot finder is two objects: its settings (a frozen dataclass named by an option file
``conf/spotfind/<name>.yaml`` in ``_target_``) and the per-dataset finder that the settings
build with :meth:`SpotFinderSettings.create` (mask, resolution map and special values bound
once). The spot-finding stage only calls ``settings.spotfind.create(...)`` and then
``finder(frames, images)``; a second spot finder is one settings class (with its finder) and
one option file.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np

from jfx.validate import Settings

if TYPE_CHECKING:  # JAX-backed; the settings load without it (jfx.lazy)
    from jfx.models.geometry import Geometry


class SpotFinderSettings(Settings, abc.ABC):
    """Settings of one spot-finding algorithm (config group ``spotfind``).

    The per-dataset finder returned by :meth:`create` is called as
    ``finder(frames (b, ny, nx), images (b,)) -> jfx.spotfind.find.SpotFindResult`` with
    spot lists of capacity :attr:`max_spots`.
    """

    config_node = "spotfind"

    @property
    @abc.abstractmethod
    def max_spots(self) -> int:
        """Spots kept per image (the capacity of the spot lists)."""

    @abc.abstractmethod
    def create(self, geometry: Geometry, pixel_mask: np.ndarray | None,
               error_value: int | None, saturation_value: float | None,
               d_map: np.ndarray | None = None) -> Any:
        """The per-dataset finder for ``geometry`` and the pixel mask / special values.

        ``d_map``: the (ny, nx) resolution map (Å) when the caller already has it.

        Raises:
            ValueError: the mask or map does not fit the detector (one line).
        """
