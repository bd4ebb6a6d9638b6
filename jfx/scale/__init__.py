"""Scaling and merging: settings (:class:`ScaleSettings`); the partiality models
(:mod:`jfx.scale.partiality`, group ``partiality``) and likelihoods
(:mod:`jfx.scale.likelihood`, group ``likelihood``) are strategy classes behind the
interfaces of :mod:`jfx.scale.base`."""

from jfx.scale.settings import ScaleSettings as ScaleSettings
