"""Interface of the integrator strategies (config group ``integrate``).

The settings (a frozen dataclass named by ``conf/integrate/<name>.yaml`` in ``_target_``)
carry the options of the integration stage every integrator shares (prediction envelope,
resolution limit, threads) and build the per-dataset integrator with
:meth:`IntegratorSettings.create`. The integration stage calls
``integrator.begin(frame, x, y, d)`` and ``integrator.finish(gathered, reference)`` on every
frame; a second integrator is one settings
class (with its integrator) and one option file.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from jfx.validate import Settings, setting


@dataclasses.dataclass(frozen=True)
class IntegratorSettings(Settings, abc.ABC):
    """Options of the integration stage shared by every integrator (group ``integrate``).

    Attributes:
        enabled: run refinement + prediction + integration after indexing (a second pass
            over the indexed images) and write ``/entry/reflections``.
        mosaicity_deg: mosaic spread σ_M used by the prediction (stills: Ewald-offset
            envelope; rotation: rocking-curve width). ``None`` (default): rotation —
            estimated from the indexed strong spots (:mod:`jfx.integrate.mosaicity`; 0.1°
            when fewer than 20 reflection passages can be used); stills — 0.1°.
        n_sigma: prediction envelope in σ (stills |ε| ≤ n σ_ε; rotation ± n σ_M/|ζ|).
        d_min_A: prediction resolution limit (Å); ``None`` = the detector corner.
        threads: frames of a chunk integrated concurrently in this many threads (numpy
            releases the GIL in the array work); 1 = serial.
        overload_value: pixel counts ≥ this are overloaded (beyond the trusted range of the
            detector response), like pixels at the file's ``saturation_value``; the lower of
            the two applies. ``None`` = the file's saturation value only. A reflection with
            an overloaded pixel in its integration region is flagged ``OVERLOADED`` and left
            out of scaling unless ``scale.include_overloads``.
        max_masked_fraction: a reflection whose signal disc has more than this fraction of
            its pixels masked, invalid or off the detector is flagged ``MASKED_FRACTION`` and
            left out of scaling (default 0.1: at most 2 of the 28 pixels of an r1 = 3 px disc;
            1 = keep all).
        detector_efficiency: divide by the sensor's detection efficiency QE = 1 −
            exp(−μ t / cos θ_in) at each reflection's angle of incidence (material and
            thickness from the file; :func:`jfx.physics.detector.detection_efficiency`, the
            ``dqe`` of DIALS): written per reflection as ``qe`` and applied with ``lp`` where
            the intensities are corrected (scaling: I / (lp · qe)). False: ``qe`` = 1.
        parallax: predict positions where the sensor absorbs each ray on average, not where
            the ray meets its surface (:func:`jfx.physics.detector.parallax_offset_mm`; 0.9
            px at 2θ = 30° for 320 µm Si at 12.4 keV), for refinement and integration alike.

    A sensor material without an attenuation table (Si, Ge, GaAs, CdTe are tabulated) while
    either correction is on stops the run before any image is read (one line naming the
    two keys that turn them off).

    The per-dataset integrator returned by :meth:`create` has ``begin(frame, x_px, y_px,
    d_A)`` → ``(summation result (:class:`jfx.integrate.summation.SummationResult`),
    gathered pixels or None, this frame's profile-reference deposit or None)`` and
    ``finish(gathered, reference)`` → ``(int_prf, int_prf_var, int_prf_var_bg, var_pix0,
    s_a)`` (:func:`jfx.integrate.reference.fit`) or None, where
    ``reference`` is a deposit or a sum of deposits (``+``) of several frames.
    """

    config_node = "integrate"

    enabled: bool = True
    mosaicity_deg: float | None = setting(None, positive=True)
    n_sigma: float = setting(3.0, positive=True)
    d_min_A: float | None = setting(None, positive=True)
    threads: int = setting(2, minimum=1)
    overload_value: float | None = setting(None, positive=True)
    max_masked_fraction: float = setting(0.1, minimum=0.0, maximum=1.0)
    detector_efficiency: bool = True
    parallax: bool = True

    def trusted_saturation(self, saturation_value: float | None) -> float | None:
        """The count from which pixels are overloaded: min(file saturation value,
        ``overload_value``), either may be None."""
        vals = [float(v) for v in (saturation_value, self.overload_value) if v is not None]
        return min(vals) if vals else None

    @abc.abstractmethod
    def create(self, pixel_mask: np.ndarray | None, error_value: int | None,
               saturation_value: float | None, *, beam_xy: tuple[float, float] | None = None,
               d_min_A: float | None = None) -> Any:
        """The per-dataset integrator (mask, special values, beam centre (px) and
        prediction limit (Å) bound once)."""
