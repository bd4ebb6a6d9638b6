"""Host-side preparation and packing of stills for the pixel fit (numpy; pure: no I/O).

:func:`prepare` turns one still (frame, its predicted rows and lattice parameters, from
the stage) into pixel boxes, background and reference intensities; :func:`pack` pads a
batch of prepared stills to common capacities (fixed shapes: one compile per bucket) as
:class:`jfx.pixelrefine.fit.StillData` for the fit rows and for every row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jfx.models.geometry import Geometry
from jfx.pixelrefine.boxes import extract, fit_weights
from jfx.pixelrefine.fit import StillData


class ReferenceLookup:
    """Reference intensities by Miller index: any index is mapped to the ASU of the
    space group (symmetry equivalents and Friedel mates share the mean). ``sigma``: the
    intensities' standard uncertainties (a merged reference), or None."""

    def __init__(self, hkl: np.ndarray, intensity: np.ndarray, space_group: int,
                 sigma: np.ndarray | None = None) -> None:
        from jfx.symmetry.asu import _unique_rows, to_asu

        self.space_group = int(space_group)
        v = np.asarray(intensity, np.float64)
        ok = np.isfinite(v)
        if sigma is not None:
            ok &= np.isfinite(np.asarray(sigma, np.float64))
        a, _ = to_asu(np.asarray(hkl)[ok], self.space_group)
        u, inv = _unique_rows(a)
        cnt = np.bincount(inv, minlength=len(u))
        self._mean = np.bincount(inv, weights=v[ok], minlength=len(u)) / np.maximum(cnt, 1)
        self._sigma = None
        if sigma is not None:  # σ of the mean of the equivalents
            s2 = np.bincount(inv, weights=np.asarray(sigma, np.float64)[ok] ** 2,
                             minlength=len(u))
            self._sigma = np.sqrt(s2) / np.maximum(cnt, 1)
        self._keys = self._key(u)

    @property
    def has_sigma(self) -> bool:
        return self._sigma is not None

    @staticmethod
    def _key(h: np.ndarray) -> np.ndarray:
        h = np.asarray(h, np.int64) + (1 << 20)
        return (h[:, 0] << 42) | (h[:, 1] << 21) | h[:, 2]

    def __call__(self, hkl: np.ndarray, sigma: bool = False):
        """(n,) reference intensity of (n, 3) ``hkl`` (NaN where absent); with ``sigma``
        also its uncertainty (NaN without one)."""
        from jfx.symmetry.asu import to_asu

        out = np.full(len(hkl), np.nan)
        sig = np.full(len(hkl), np.nan)
        if len(hkl) and len(self._keys):
            a, _ = to_asu(np.asarray(hkl), self.space_group)
            k = self._key(a)
            pos = np.clip(np.searchsorted(self._keys, k), 0, len(self._keys) - 1)
            hit = self._keys[pos] == k
            out[hit] = self._mean[pos[hit]]
            if self._sigma is not None:
                sig[hit] = self._sigma[pos[hit]]
        return (out, sig) if sigma else out


@dataclasses.dataclass(frozen=True)
class PreparedStill:
    """One still's rows and boxes (numpy; ``R`` predicted rows).

    Attributes:
        image: image number; position: index into the selection.
        hkl: (R, 3) int32; iref: (R,) float64 (NaN: not in the reference); ref_sigma: (R,)
            its relative uncertainty; qe: (R,).
        counts, weight, background: (R, B, B) float32; usable (detector pixel valid),
            saturated, neighbour (in the core of another predicted row): (R, B, B) bool.
        r_px: (R, B, B) float32 distance of each pixel from the predicted (start) position.
        bg_var: (R,) float64; x0, y0: (R,) float64 box origins (px).
        fit_rows: (F,) int64 rows that drive the fit (at most the fit capacity).
        observed_x, observed_y: (R,) float32 matched indexed spot (NaN: none).
        U0: (3, 3) float64; cell_u: internal cell; geometry: the still's geometry.
    """

    image: int
    position: int
    hkl: np.ndarray
    iref: np.ndarray
    ref_sigma: np.ndarray
    qe: np.ndarray
    counts: np.ndarray
    weight: np.ndarray
    background: np.ndarray
    usable: np.ndarray
    saturated: np.ndarray
    neighbour: np.ndarray
    r_px: np.ndarray
    bg_var: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    fit_rows: np.ndarray
    observed_x: np.ndarray
    observed_y: np.ndarray
    U0: np.ndarray
    cell_u: np.ndarray
    geometry: Geometry

    @property
    def n(self) -> int:
        return int(self.hkl.shape[0])


def prepare(frame: np.ndarray, image: int, position: int, geometry: Geometry, pred: Any, *,
            U0: np.ndarray, cell_u: np.ndarray, reference: ReferenceLookup, half: int,
            inner_px: float, background: Any, max_fit: int, pixel_mask: np.ndarray | None,
            error_value: float | None, saturation_value: float | None,
            observed: tuple[np.ndarray, np.ndarray] | None = None,
            reference_sigma: float = 0.3, sigma_floor: float = 0.05) -> PreparedStill:
    """One still's rows, boxes, background and reference intensities.

    ``pred``: the still's rows predicted in a generous Ewald-offset envelope (a
    :class:`jfx.integrate.predict.StillPrediction`: ``hkl``, ``x_px``, ``y_px``,
    ``partiality``, ``polarization``, ``qe``); ``U0``, ``cell_u``: the lattice's reference
    orientation and internal cell (:func:`jfx.refine.params.from_basis`); ``observed``: the
    rows' matched indexed-spot centroids (x, y; NaN: none), or None. The fit rows are the
    ``max_fit`` with the largest expected photons I_ref · pol · P among those with a
    reference and a usable box centre. The relative uncertainty of each row's reference
    intensity is ``reference_sigma``, or for a reference with σ (the data's own merge)
    √(``sigma_floor``² + (σ/I)²)."""
    n = len(pred.hkl)
    bx = extract(frame, pred.x_px, pred.y_px, half, pixel_mask, error_value, saturation_value)
    neighbour = neighbour_cores(pred.x_px, pred.y_px, bx, inner_px)
    free = bx.usable & ~neighbour
    bg, bg_var = background.estimate(bx.counts, free, bx.r_px, inner_px)
    w = fit_weights(bx.counts, bg, free)
    iref, isig = reference(pred.hkl, sigma=True)
    if reference.has_sigma:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.sqrt(sigma_floor ** 2 + (isig / iref) ** 2)
        bad = ~np.isfinite(rel) | (iref <= 0)
        iref = np.where(bad, np.nan, iref)  # a merged I ≤ 0 cannot drive the fit
        ref_sigma = np.where(bad, reference_sigma, np.minimum(rel, 10 * reference_sigma))
    else:
        ref_sigma = np.full(n, float(reference_sigma))
    centre_ok = bx.usable[:, half, half]
    expect = np.where(np.isfinite(iref) & (iref > 0) & centre_ok,
                      np.nan_to_num(iref) * pred.polarization * pred.partiality, -1.0)
    order = np.argsort(-expect, kind="stable")
    fit_rows = order[:max_fit][expect[order[:max_fit]] > 0]
    nan = np.full(n, np.nan, np.float32)
    ox, oy = (nan, nan) if observed is None else observed
    return PreparedStill(
        image=int(image), position=int(position), hkl=np.asarray(pred.hkl, np.int32),
        iref=iref, ref_sigma=np.asarray(ref_sigma, np.float64),
        qe=np.asarray(pred.qe, np.float64), counts=bx.counts, weight=w,
        background=bg.astype(np.float32), usable=bx.usable, saturated=bx.saturated,
        neighbour=neighbour, r_px=bx.r_px.astype(np.float32),
        bg_var=np.asarray(bg_var, np.float64), x0=bx.x0, y0=bx.y0,
        fit_rows=fit_rows.astype(np.int64), observed_x=np.asarray(ox, np.float32),
        observed_y=np.asarray(oy, np.float32), U0=np.asarray(U0, np.float64),
        cell_u=np.asarray(cell_u, np.float64), geometry=geometry)


def neighbour_cores(x_px: np.ndarray, y_px: np.ndarray, bx: Any, core_px: float
                    ) -> np.ndarray:
    """(R, B, B) bool: box pixels nearer to another predicted row than to the box's own and
    within ``core_px`` of it — a neighbouring reflection's spot, left out of this row's
    background, fit and integration (flagged ``OVERLAP`` when it cuts the aperture)."""
    from scipy.spatial import cKDTree

    n = len(x_px)
    B = bx.counts.shape[-1]
    out = np.zeros((n, B, B), bool)
    if n < 2:
        return out
    xy = np.column_stack([x_px, y_px])
    reach = (B - 1) / 2 * np.sqrt(2.0) + core_px  # a neighbour whose core can touch a box
    pairs = np.asarray(sorted(cKDTree(xy).query_pairs(reach)), np.int64).reshape(-1, 2)
    if pairs.size == 0:
        return out
    pairs = np.concatenate([pairs, pairs[:, ::-1]])  # (box row i, neighbour j)
    i, j = pairs[:, 0], pairs[:, 1]
    ar = np.arange(B, dtype=np.float64)
    X = bx.x0[i][:, None, None] + ar[None, None, :]
    Y = bx.y0[i][:, None, None] + ar[None, :, None]
    dj2 = (X - x_px[j][:, None, None]) ** 2 + (Y - y_px[j][:, None, None]) ** 2
    di2 = (X - x_px[i][:, None, None]) ** 2 + (Y - y_px[i][:, None, None]) ** 2
    hit = (dj2 < core_px * core_px) & (dj2 < di2)
    np.logical_or.at(out, i, hit)
    return out


def bucket(n: int, minimum: int = 64) -> int:
    """Power-of-two capacity ≥ n (≥ ``minimum``)."""
    return 1 << max(int(np.ceil(np.log2(max(n, 1)))), int(np.log2(minimum)))


def _stack_geometry(geoms: list[Geometry]) -> Geometry:
    return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *geoms)


def pack(stills: list[PreparedStill], n_batch: int, capacity: int, rows: str
         ) -> StillData:
    """A batch of ``n_batch`` stills (the list padded by repeating its first still with no
    valid rows) with ``capacity`` rows each: ``rows`` = ``fit`` (each still's fit rows) or
    ``all`` (every predicted row; fit flags on its fit rows)."""
    def one(s: PreparedStill, real: bool):
        idx = s.fit_rows if rows == "fit" else np.arange(s.n)
        n = len(idx) if real else 0
        idx = idx[:capacity]
        pad = capacity - len(idx)

        def take(a, fill=0):
            a = np.asarray(a)[idx]
            if pad:
                a = np.concatenate([a, np.full((pad,) + a.shape[1:], fill, a.dtype)])
            return a

        fit = np.zeros(s.n, bool)
        fit[s.fit_rows] = True
        valid = np.arange(capacity) < n
        iref = np.nan_to_num(take(s.iref), nan=0.0)
        return dict(hkl=take(s.hkl, 1).astype(np.float64), fit=take(fit) & valid,
                    valid=valid, iref=iref, ref_sigma=take(s.ref_sigma, 1.0), qe=take(s.qe, 1.0), counts=take(s.counts),
                    weight=np.where(valid[:, None, None], take(s.weight), 0).astype(
                        np.float32),
                    background=take(s.background), bg_var=take(s.bg_var),
                    x0=take(s.x0), y0=take(s.y0), U0=s.U0)

    items = [one(s, True) for s in stills]
    items += [one(stills[0], False) for _ in range(n_batch - len(stills))]
    geo = _stack_geometry([s.geometry for s in stills]
                          + [stills[0].geometry] * (n_batch - len(stills)))
    cols = {k: np.stack([it[k] for it in items]) for k in items[0]}
    return StillData(geometry=geo, **cols)


__all__ = ["PreparedStill", "ReferenceLookup", "bucket", "pack", "prepare"]
