"""Reflection tables (one row per observation) and their flag bits.

Column meanings follow DIALS / NXreflections. A :class:`Reflections` table is host-side
(numpy), one row per reflection observation: a still's reflection on its image, or a rotation
reflection summed over the images it was recorded on. The file names of the columns live in
:mod:`jfx.io.process_h5` only.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np


class ReflectionFlag(enum.IntFlag):
    """Bits of the ``flags`` column (uint32), written to ``/entry/reflections/flags``."""

    PREDICTED = 1 << 0  # row comes from the prediction
    OBSERVED = 1 << 1  # a spot centroid was matched (observed_x/y valid)
    INDEXED = 1 << 2  # matched spot was assigned this hkl by indexing
    INTEGRATED_SUM = 1 << 3  # int_sum / int_sum_var valid
    INTEGRATED_PRF = 1 << 4  # int_prf / int_prf_var valid
    OVERLOADED = 1 << 5  # overloaded pixel in the integration region (kept out of scaling)
    MASKED_PIXEL = 1 << 6  # masked/invalid pixel in the signal area
    OVERLAP = 1 << 7  # signal area overlaps another reflection
    OUTLIER = 1 << 8  # rejected as an outlier (integration or scaling)
    EDGE = 1 << 9  # signal area crosses the detector edge
    BAD_BACKGROUND = 1 << 10  # too few background pixels
    PARTIAL = 1 << 11  # recorded fraction < 0.9 (rotation)
    MASKED_FRACTION = 1 << 12  # signal disc masked beyond integrate.max_masked_fraction


_FLOAT_COLUMNS = ("predicted_x", "predicted_y", "predicted_phi_deg", "observed_x", "observed_y",
                  "d_A", "partiality", "lp", "zeta", "ewald_offset_invA", "int_sum",
                  "int_sum_var", "int_prf", "int_prf_var", "background_mean",
                  "int_prf_var_bg", "qe")


@dataclasses.dataclass(frozen=True)
class Reflections:
    """Reflection table with ``n`` rows (all columns (n,) unless noted; px: first pixel
    centre = 0).

    Attributes:
        hkl: (n, 3) int32 Miller indices in the indexed setting.
        image: int32 image number (rotation: the image holding the centroid).
        image_first, image_last: int32 first/last image whose partials were summed.
        predicted_x, predicted_y: float32 px.
        predicted_phi_deg: float32 rotation angle of the centroid (deg; NaN for stills).
        observed_x, observed_y: float32 px of the matched indexed spot (NaN: none).
        d_A: float32 resolution (Å).
        partiality: float32 stills: model Ewald-offset partiality; rotation: recorded
            fraction F of the reflection (Σ of the summed partials' fractions).
        lp: float32 Lorentz × polarisation factor (stills: polarisation); I_obs ∝ lp.
        qe: float32 sensor detection efficiency 1 − exp(−μt/cos θ_in) at the reflection's
            ray (:func:`jfx.physics.detector.detection_efficiency`; 1 with
            ``integrate.detector_efficiency=false``); I_obs ∝ qe. The intensities (int_sum,
            int_prf) are the recorded photons, uncorrected: the corrected intensity is
            I / (lp · qe), applied in one place, by scaling
            (:mod:`jfx.scale.observations`).
        zeta: float32 ζ = e·(ŝ1 × ŝ0)/|…| of rotation reflections (NaN for stills).
        ewald_offset_invA: float32 Ewald offset of still reflections (Å⁻¹; NaN: rotation).
        int_sum, int_sum_var: float32 summation intensity and variance (photons; rotation:
            sum over the recorded partials).
        int_prf, int_prf_var: float32 profile-fitted intensity and variance (NaN if none).
        background_mean: float32 photons/pixel.
        int_prf_var_bg: float32 the part of ``int_prf_var`` that does not depend on the
            intensity (the profile-fit variance at I = 0, photons²; NaN if none): scaling
            evaluates the variance at the model intensity from it
            (:func:`jfx.scale.observations.background_variance`).
        flags: uint32 :class:`ReflectionFlag` bits.
    """

    hkl: np.ndarray
    image: np.ndarray
    image_first: np.ndarray
    image_last: np.ndarray
    predicted_x: np.ndarray
    predicted_y: np.ndarray
    predicted_phi_deg: np.ndarray
    observed_x: np.ndarray
    observed_y: np.ndarray
    d_A: np.ndarray
    partiality: np.ndarray
    lp: np.ndarray
    zeta: np.ndarray
    ewald_offset_invA: np.ndarray
    int_sum: np.ndarray
    int_sum_var: np.ndarray
    int_prf: np.ndarray
    int_prf_var: np.ndarray
    background_mean: np.ndarray
    flags: np.ndarray
    int_prf_var_bg: np.ndarray | None = None
    qe: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.qe is None:  # tables built before the column existed: no correction
            object.__setattr__(self, "qe", np.ones(np.asarray(self.hkl).shape[0], np.float32))
        if self.int_prf_var_bg is None:  # tables built before the column existed
            object.__setattr__(self, "int_prf_var_bg",
                               np.full(np.asarray(self.hkl).shape[0], np.nan, np.float32))

    @property
    def n(self) -> int:
        return int(np.asarray(self.hkl).shape[0])

    @staticmethod
    def empty(n: int) -> Reflections:
        """``n`` rows with the defaults of unset columns (NaN floats, partiality, lp and qe 1,
        zero indices, images and flags)."""
        cols = {c: np.full(n, np.nan, np.float32) for c in _FLOAT_COLUMNS}
        cols["partiality"][:] = 1.0
        cols["lp"][:] = 1.0
        cols["qe"][:] = 1.0
        cols["predicted_x"][:] = 0.0
        cols["predicted_y"][:] = 0.0
        cols["d_A"][:] = 0.0
        return Reflections(hkl=np.zeros((n, 3), np.int32), image=np.zeros(n, np.int32),
                           image_first=np.zeros(n, np.int32), image_last=np.zeros(n, np.int32),
                           flags=np.zeros(n, np.uint32), **cols)

    def take(self, rows: np.ndarray) -> Reflections:
        """The table restricted to ``rows`` (an index array or a boolean mask)."""
        return Reflections(**{f.name: np.asarray(getattr(self, f.name))[rows]
                              for f in dataclasses.fields(self)})

    @staticmethod
    def concatenate(tables: list[Reflections]) -> Reflections:
        """Rows of ``tables`` one after the other."""
        if not tables:
            return Reflections.empty(0)
        return Reflections(**{f.name: np.concatenate([np.asarray(getattr(t, f.name))
                                                      for t in tables])
                              for f in dataclasses.fields(Reflections)})
