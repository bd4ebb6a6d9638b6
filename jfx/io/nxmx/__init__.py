"""Reader for Jungfraujoch (and other NXmx) master files.

``open_master(path)`` parses an NXmx master file and returns a :class:`MasterFile`: image
stack description (layout, shape, dtype, codec), invalid-pixel conventions, the experimental
:class:`~jfx.models.geometry.Geometry` derived from the NXtransformations chains, optional
sample metadata (cell, space group, bandwidth), and lazy access to the frames.

Accepted layouts (see docs/input_format.md):

* ``"legacy"``: ``/entry/data/data_000001``, ``data_000002``, … external links to
  ``<name>_data_NNNNNN.h5:/entry/data/data``; images are concatenated in link order.
* ``"vds"``: ``/entry/data/data`` is a virtual dataset. Every source file is checked to
  exist and to contain its dataset (HDF5 silently returns fill values otherwise).
* ``"single"``: ``/entry/data/data`` is a real dataset in the master file.

Frames are never read eagerly. :meth:`MasterFile.iter_chunks` reads ahead in a background
thread (``workers=1``) or in ``workers`` reader processes (h5py serialises on a global lock,
so only processes scale), delivering chunks in order with bounded memory.

Frame: NXmx/McStas lab frame (z along the beam, y up). Pixel (0, 0) centre = (0.0, 0.0).
Every unusable input raises :class:`~jfx.io.errors.InputError` with a one-line message.

Modules (typed adapters from file groups to models, composed by a thin format class):

* :mod:`~jfx.io.nxmx.layout` — ``/entry/data`` layout discovery and data-file checks
  → :class:`~jfx.io.nxmx.layout.DataLayout` (the frame reader's spec).
* :mod:`~jfx.io.nxmx.transforms` — units, NXtransformations datasets and chains.
* :mod:`~jfx.io.nxmx.geometry` — beam / detector / goniometer → ``Geometry``.
* :mod:`~jfx.io.nxmx.metadata` — pixel types and error value, pixel mask, saturation value,
  sample cell and space group, stored spots (:class:`jfx.models.spots.StoredSpots`).
* :mod:`~jfx.io.nxmx.frames` — chunked read-ahead (thread or spawned reader processes).
* :mod:`~jfx.io.nxmx.master` — :class:`MasterFile` and :func:`open_master`.
"""

from __future__ import annotations

from jfx.io.nxmx.master import MasterFile, open_master
from jfx.io.nxmx.metadata import SUPPORTED_DTYPES, error_value_of

__all__ = ["MasterFile", "open_master", "SUPPORTED_DTYPES", "error_value_of"]
