"""Merged intensities and merging statistics: the results of scaling (host-side numpy).

:class:`MergedReflections` is what :func:`jfx.scale.merge.merge` returns and the writers of
:mod:`jfx.io.merged` take; :class:`MergingStatistics` is what
:func:`jfx.scale.stats.merging_statistics` returns (definitions of every column there) and
:mod:`jfx.io.report` / ``/entry/scaling/statistics`` present.
"""

from __future__ import annotations

import dataclasses

import numpy as np

ANOM_COLUMNS = ("n_anom_pairs", "anom_completeness", "anom_multiplicity", "dano_over_sigma",
                "r_anom")
"""Anomalous columns beyond ``cc_anom`` (``-A`` only; definitions in
:mod:`jfx.scale.stats`).  They come last in the table, so the columns of files written before
them keep their positions."""

STAT_COLUMNS = ("d_max", "d_min", "n_obs", "n_unique", "multiplicity", "completeness",
                "mean_i_over_sigma", "cc_half", "cc_star", "r_meas", "r_pim", "cc_anom",
                "cc_ref") + ANOM_COLUMNS
"""Column names of the ``/entry/scaling/statistics`` table (FORMATS.md)."""

INT_COLUMNS = ("n_obs", "n_unique", "n_anom_pairs")
"""Columns holding int64 counts (float64 otherwise)."""

WILSON_D_MAX_A = 4.5
"""The overall Wilson B (:attr:`MergingStatistics.wilson_b_A2`) is fitted to reflections with
d < WILSON_D_MAX_A (Å)."""


@dataclasses.dataclass(frozen=True)
class MergedReflections:
    """Merged intensities of the observed, not systematically absent ASU reflections.

    Attributes:
        hkl: (m, 3) int32 ASU Miller indices (sorted h, k, l).
        d_A: (m,) float64 resolution (Å).
        I, sigma: (m,) float64 inverse-variance weighted mean over all observations of the
            reflection (both Friedel mates) and its σ.
        n_obs: (m,) int64 number of observations merged.
        centric: (m,) bool.
        I_plus, sig_plus, n_plus, I_minus, sig_minus, n_minus: (m,) Friedel-separated means
            (anomalous mode only, else None).  Acentric reflections with no I(+) (I(−))
            observation have NaN there and n = 0.  Centric reflections have
            I(+) = I(−) = I (Friedel mates are equivalent) with n_plus = n_minus = n_obs.
        cell: (6,) float64 (Å, °).
        space_group: IT number.
        anomalous: whether Friedel pairs were kept separate.
    """

    hkl: np.ndarray
    d_A: np.ndarray
    I: np.ndarray
    sigma: np.ndarray
    n_obs: np.ndarray
    centric: np.ndarray
    cell: np.ndarray
    space_group: int
    anomalous: bool = False
    I_plus: np.ndarray | None = None
    sig_plus: np.ndarray | None = None
    n_plus: np.ndarray | None = None
    I_minus: np.ndarray | None = None
    sig_minus: np.ndarray | None = None
    n_minus: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.hkl.shape[0])


@dataclasses.dataclass(frozen=True)
class MergingStatistics:
    """Merging statistics; every per-shell array has ``n_shells + 1`` rows, the last is overall.

    Attributes:
        d_max, d_min: shell limits (Å).
        n_obs, n_unique: int64 counts (see module docstring).
        multiplicity, completeness (fraction), mean_i_over_sigma, cc_half, cc_star, r_meas,
        r_pim, cc_anom (NaN unless anomalous), cc_ref (NaN without reference): float64.
        n_anom_pairs (int64, 0 unless anomalous), anom_completeness (fraction),
        anom_multiplicity, dano_over_sigma (mean |ΔI|/σ(ΔI), intensities), r_anom
        (float64, NaN unless anomalous): the anomalous statistics of
        :mod:`jfx.scale.stats`.
        wilson_b_A2: overall Wilson B (Å²), NaN when it could not be fitted.
        suggested_d_min_A: advisory high-resolution limit (Å) where the tanh fit of CC½
            against 1/d² crosses 0.3 (:func:`jfx.scale.stats.fit_cc_half_resolution`), NaN
            when not determined.
        anomalous: anomalous mode.
        has_reference: a reference was given (``cc_ref`` meaningful).
        n_rejected_images: number of images flagged in ``rejected_image_mask``.
    """

    d_max: np.ndarray
    d_min: np.ndarray
    n_obs: np.ndarray
    n_unique: np.ndarray
    multiplicity: np.ndarray
    completeness: np.ndarray
    mean_i_over_sigma: np.ndarray
    cc_half: np.ndarray
    cc_star: np.ndarray
    r_meas: np.ndarray
    r_pim: np.ndarray
    cc_anom: np.ndarray
    cc_ref: np.ndarray
    n_anom_pairs: np.ndarray
    anom_completeness: np.ndarray
    anom_multiplicity: np.ndarray
    dano_over_sigma: np.ndarray
    r_anom: np.ndarray
    wilson_b_A2: float
    anomalous: bool
    has_reference: bool
    n_rejected_images: int = 0
    suggested_d_min_A: float = float("nan")

    @property
    def n_shells(self) -> int:
        """Number of resolution shells (rows minus the overall row)."""
        return int(self.d_max.shape[0]) - 1

    def overall(self, name: str) -> float:
        """Overall value of column ``name``."""
        return getattr(self, name)[-1].item()

    def columns(self) -> tuple[str, ...]:
        """Column names that apply: ``cc_anom`` and :data:`ANOM_COLUMNS` only when anomalous,
        ``cc_ref`` only with a reference."""
        cols = [c for c in STAT_COLUMNS if c not in ("cc_anom", "cc_ref") + ANOM_COLUMNS]
        if self.anomalous:
            cols.append("cc_anom")
        if self.has_reference:
            cols.append("cc_ref")
        if self.anomalous:
            cols += ANOM_COLUMNS
        return tuple(cols)

    def as_table(self) -> dict[str, np.ndarray]:
        """Columns for ``/entry/scaling/statistics``: name → (n_shells + 1,) array, one row
        per shell (low to high resolution) and a last "overall" row."""
        return {c: np.asarray(getattr(self, c)).copy() for c in self.columns()}

    def as_records(self) -> np.ndarray:
        """:meth:`as_table` as a numpy structured array (n_shells + 1 rows; int64 counts,
        float64 otherwise), e.g. for an HDF5 compound dataset."""
        tab = self.as_table()
        dtype = [(c, np.int64 if c in INT_COLUMNS else np.float64) for c in tab]
        rec = np.zeros(self.n_shells + 1, dtype=dtype)
        for c, v in tab.items():
            rec[c] = v
        return rec
