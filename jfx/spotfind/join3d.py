"""3D spots of a rotation sweep: per-frame spots joined across consecutive images.

DIALS finds the spots of a sweep as 3D connected components of the strong pixels of the
whole image stack and centroids them in (x, y, z) (``dials.find_spots``; Winter et al. 2018,
Acta Cryst. D74, 85–97). jfx finds spots per frame (:mod:`jfx.spotfind.find`) and joins them
afterwards, streaming, with bounded memory:

* **Join rule.** Two 2D spots on consecutive images i and i + 1 belong to the same 3D spot
  when their strong-pixel bounding boxes (inclusive pixel boxes) overlap or lie at most
  ``gap_px`` apart (:data:`GAP_PX` = 1: touching boxes join, side or corner). Overlapping
  strong pixels, DIALS' rule, imply overlapping boxes, so every pair DIALS joins is joined;
  the tolerance of 1 px also joins the 1-pixel tails of a reflection that moved by a pixel
  between images (measured: docs/spotfinding.md), and may join two reflections within a
  spot diameter on neighbouring images, which DIALS merges too as soon as one pixel touches.
  The relation is closed transitively (connected components): a 2D spot that overlaps two
  spots of the previous image merges them. Spots of non-consecutive images (a gap,
  ``stride`` > 1) are never joined.
* **Centroid.** With weights w = max(I₂D, 10⁻³) (the background-subtracted photons of each
  2D spot; the floor keeps spots with I ≤ 0 from cancelling), x̄ = Σw·x / Σw, ȳ likewise and
  z̄ = Σw·(i + 0.5) / Σw with i the image of each 2D spot: the frame coordinate of a spot
  seen on one image is its image centre, as before. This is DIALS' intensity-weighted
  centroid evaluated with each image's pixels collapsed onto its 2D centroid (same x̄, ȳ;
  z̄ identical, since DIALS gives every pixel of image i the coordinate i + 0.5).
* **Spread.** ``frame_sd`` = sqrt(Σw·(z − z̄)² / Σw), the weighted spread of the frame
  coordinates (0 for one image).

Input: the untruncated per-frame spot lists (:class:`jfx.models.spots.FrameSpots`, every
spot that passed the filters, before ``max_spots``: a spot kept on one image and dropped on
the next would otherwise get a wrong φ). Cost: O(n log n) numpy per image for n spots
(bounding boxes hashed into 16-px cells); memory: the spots of the previous image and the
accumulators of the 3D spots still open, plus the finished 3D spots.

Pure core: numpy / scipy only, no I/O.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components

from jfx.models.spots import FrameSpots, Spots3D

CELL_PX = 16
"""Side of the hash cells used to find overlapping bounding boxes (px)."""

GAP_PX = 1
"""Default join tolerance: boxes on consecutive images that overlap or touch (px)."""

MIN_WEIGHT = 1e-3
"""Floor of the centroid weight of a 2D spot (photons)."""

# accumulator columns: Σw, Σw·x, Σw·y, Σw·z, Σw·z², ΣI, Σpixels, first, last, n_images
_SW, _SX, _SY, _SZ, _SZZ, _SI, _NP, _FIRST, _LAST, _N2 = range(10)
_SUMS = slice(0, 7)


def _cells(box: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell keys, row) of every hash cell each box (k, 4) touches."""
    cx0, cx1 = box[:, 0] // cell, box[:, 1] // cell
    cy0, cy1 = box[:, 2] // cell, box[:, 3] // cell
    nx = cx1 - cx0 + 1
    cnt = nx * (cy1 - cy0 + 1)
    row = np.repeat(np.arange(box.shape[0]), cnt)
    off = np.arange(row.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    gx = cx0[row] + off % nx[row]
    gy = cy0[row] + off // nx[row]
    return (gy << 32) + gx, row


def overlapping_pairs(a: np.ndarray, b: np.ndarray, cell: int = CELL_PX, gap: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of overlapping inclusive bounding boxes.

    Args:
        a: (na, 4) int boxes x_min, x_max, y_min, y_max (px, inclusive).
        b: (nb, 4) int boxes.
        cell: hash-cell side (px); any value gives the same pairs.
        gap: boxes at most ``gap`` px apart also count (0: they must share a pixel; 1: they
            may also touch, side or corner).

    Returns:
        (ia, ib) int64 arrays of the unique pairs (a[ia] overlaps b[ib]), sorted.
    """
    a = np.asarray(a, np.int64).reshape(-1, 4)
    b = np.asarray(b, np.int64).reshape(-1, 4) + np.array([-gap, gap, -gap, gap])
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ka, ra = _cells(a, cell)
    kb, rb = _cells(b, cell)
    order = np.argsort(ka, kind="stable")
    ka, ra = ka[order], ra[order]
    lo = np.searchsorted(ka, kb, side="left")
    cnt = np.searchsorted(ka, kb, side="right") - lo
    rep = np.repeat(np.arange(kb.size), cnt)
    pos = lo[rep] + (np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    ia, ib = ra[pos], rb[rep]
    ok = ((a[ia, 0] <= b[ib, 1]) & (b[ib, 0] <= a[ia, 1])
          & (a[ia, 2] <= b[ib, 3]) & (b[ib, 2] <= a[ia, 3]))
    key = np.unique(ia[ok] * b.shape[0] + ib[ok])
    return key // b.shape[0], key % b.shape[0]


class SpotJoiner:
    """Streaming 3D joining: :meth:`add` the spots of consecutive images in increasing image
    order (any number of images per call), then :meth:`finish` once.

    Holds the 2D spots of the last image added (their boxes and the 3D spot each belongs
    to), the accumulators of the open 3D spots and the finished ones.
    """

    def __init__(self, gap_px: int = GAP_PX, cell: int = CELL_PX) -> None:
        if gap_px < 0:
            raise ValueError(f"3D joining gap must be >= 0 px, got {gap_px}")
        self._gap = int(gap_px)
        self._cell = int(cell)
        self._last_image: int | None = None
        self._prev_box = np.zeros((0, 4), np.int64)
        self._prev_comp = np.zeros(0, np.int64)
        self._open = np.zeros((0, 10), np.float64)
        self._done: list[np.ndarray] = []

    def add(self, spots: FrameSpots) -> None:
        """Join the spots of one or more images (rows ordered by image, images increasing
        and after every image added before).

        Raises:
            ValueError: images out of order.
        """
        image = np.asarray(spots.image, np.int64)
        if image.size == 0:
            return
        if np.any(np.diff(image) < 0):
            raise ValueError("3D joining needs the spots ordered by image")
        bounds = np.flatnonzero(np.diff(image)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [image.size]])
        for s, e in zip(starts, stops):
            self._add_image(int(image[s]), spots.take(slice(s, e)))

    def add_empty_image(self, image: int) -> None:
        """Mark ``image`` as processed without spots (closes every open 3D spot)."""
        self._add_image(int(image), FrameSpots.empty())

    def _add_image(self, image: int, sp: FrameSpots) -> None:
        if self._last_image is not None and image <= self._last_image:
            raise ValueError(f"3D joining: image {image} after image {self._last_image}")
        n = sp.n
        box = np.asarray(sp.bbox, np.int64).reshape(-1, 4)
        w = np.maximum(np.asarray(sp.intensity, np.float64), MIN_WEIGHT)
        x = np.asarray(sp.x_px, np.float64)
        y = np.asarray(sp.y_px, np.float64)
        z = image + 0.5
        new = np.zeros((n, 10), np.float64)
        new[:, _SW], new[:, _SX], new[:, _SY] = w, w * x, w * y
        new[:, _SZ], new[:, _SZZ] = w * z, w * z * z
        new[:, _SI] = np.asarray(sp.intensity, np.float64)
        new[:, _NP] = np.asarray(sp.n_pixels, np.float64)
        new[:, _FIRST] = new[:, _LAST] = image
        new[:, _N2] = 1.0
        n_open = self._open.shape[0]
        if self._last_image is None or image != self._last_image + 1 or n_open == 0:
            if n_open:
                self._done.append(self._open)
            acc, comp = new, np.arange(n, dtype=np.int64)
        else:
            ia, ib = overlapping_pairs(self._prev_box, box, self._cell, self._gap)
            # nodes: open 3D spots 0 … n_open−1, new 2D spots n_open … n_open+n−1
            src, dst = self._prev_comp[ia], n_open + ib
            g = scipy.sparse.coo_matrix((np.ones(src.size, np.int8), (src, dst)),
                                        shape=(n_open + n, n_open + n))
            _, lab = connected_components(g.tocsr(), directed=True, connection="weak")
            linked = np.zeros(n_open, bool)
            linked[self._prev_comp[ia]] = True
            if not linked.all():
                self._done.append(self._open[~linked])
            keep = np.concatenate([linked, np.ones(n, bool)])
            rows = np.concatenate([self._open, new])[keep]
            u, inv = np.unique(lab[keep], return_inverse=True)
            acc = np.zeros((u.size, 10), np.float64)
            for c in range(_NP + 1):
                acc[:, c] = np.bincount(inv, weights=rows[:, c], minlength=u.size)
            acc[:, _FIRST] = np.inf
            np.minimum.at(acc[:, _FIRST], inv, rows[:, _FIRST])
            acc[:, _LAST] = image
            acc[:, _N2] = np.bincount(inv, weights=rows[:, _N2], minlength=u.size)
            comp = inv[n_open - int((~linked).sum()):]
        self._open, self._prev_comp, self._prev_box = acc, comp, box
        self._last_image = image

    def finish(self) -> Spots3D:
        """The 3D spots of everything added, sorted by frame centroid (then x, y)."""
        acc = np.concatenate(self._done + [self._open]) if (self._done or self._open.size) \
            else np.zeros((0, 10))
        self._done, self._open = [], np.zeros((0, 10), np.float64)
        self._prev_box, self._prev_comp = np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
        sw = acc[:, _SW]
        x, y, z = acc[:, _SX] / sw, acc[:, _SY] / sw, acc[:, _SZ] / sw
        var = np.maximum(acc[:, _SZZ] / sw - z * z, 0.0)
        one = acc[:, _FIRST] == acc[:, _LAST]
        var = np.where(one, 0.0, var)  # exact 0, not round-off, for one image
        order = np.lexsort((y, x, z))
        out = Spots3D(x_px=x, y_px=y, frame=z, frame_sd=np.sqrt(var),
                      first_image=acc[:, _FIRST].astype(np.int64),
                      last_image=acc[:, _LAST].astype(np.int64), intensity=acc[:, _SI],
                      n_pixels=np.rint(acc[:, _NP]).astype(np.int64),
                      n_images=acc[:, _N2].astype(np.int32))
        return out.take(order)


def join_spots(spots: FrameSpots, gap_px: int = GAP_PX, cell: int = CELL_PX) -> Spots3D:
    """The 3D spots of per-frame spot lists (all images at once; see :class:`SpotJoiner`).

    Args:
        spots: untruncated per-frame spots, rows ordered by image.
        gap_px: boxes on consecutive images at most this far apart are joined (px).
        cell: hash-cell side (px) of the box-overlap search.

    Returns:
        :class:`Spots3D` sorted by frame centroid.
    """
    j = SpotJoiner(gap_px, cell)
    j.add(spots)
    return j.finish()
