"""Integration: reflection prediction, summation and profile fitting.

* :mod:`jfx.integrate.predict` — which reflections are on which image and where
  (:func:`~jfx.integrate.predict.predict_still`, :func:`~jfx.integrate.predict.predict_rotation`);
* :mod:`jfx.integrate.summation` — disc/annulus summation with robust background, flags and a
  Poisson variance model (:func:`~jfx.integrate.summation.integrate_frame`, rotation partials);
* :mod:`jfx.integrate.profile` — profile fitting (``int_prf``) with per-shell widths.
"""

from jfx.integrate.settings import SummationIntegratorSettings as SummationIntegratorSettings
