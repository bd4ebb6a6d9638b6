"""Pixel refinement (``-r pixelrefine``): a differentiable forward model of the pixels of a
still's predicted reflections, fitted per still against a reference (``-z``), and
integration from the refined model.

* :mod:`jfx.pixelrefine.components` — the swappable parts (spot profile, partiality,
  background; config groups ``pixel_profile``, ``pixel_partiality``, ``pixel_background``);
* :mod:`jfx.pixelrefine.fit` — the forward model, the per-still fit (LM under ``vmap``) and
  the profile-fitted integration;
* :mod:`jfx.pixelrefine.boxes`, :mod:`jfx.pixelrefine.stills` — pixel boxes and the
  host-side preparation and packing of stills.
"""
