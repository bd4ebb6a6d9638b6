"""Real-frame artefacts the diffraction model lacks (pure numpy; used by
:func:`jfx.sim.simulate.iter_frames`).

* **Beamstop shadow** with its arm: a disc of radius ``beamstop_radius_px`` centred on the beam
  and an arm of width ``beamstop_arm_width_px`` from the disc to the detector edge at
  ``beamstop_arm_angle_deg`` (0 = +x, 90 = +y). Pixels in the shadow keep
  ``beamstop_transmission`` of the expected photons (attenuated, NOT masked: the file carries
  no beamstop mask). The edge is a linear ramp over ``beamstop_edge_px`` (penumbra).
* **Parasitic / direct-beam scatter**: a diffuse halo ``scatter_photons · exp(−r /
  scatter_length_px)`` photons/px around the beam (r = distance to the beam centre), multiplied
  pixel by pixel and frame by frame by fully developed speckle: with contrast c
  (``scatter_speckle``) the factor is (1 − c) + c·E, E ~ Exp(1) (mean 1, so the mean halo is
  unchanged; Goodman, *Speckle phenomena in optics*, 2007, ch. 3). The halo is attenuated by the
  shadow like everything else.
* **Zingers**: per frame Poisson(``zingers_per_image``) single pixels get
  ``zinger_photons`` · U(0.5, 1.5) extra counts (cosmic rays / radioactivity).
* **Hot pixels**: ``hot_pixels`` fixed sensor pixels (NOT in the pixel mask) read
  Poisson(``hot_pixel_photons``) extra counts on every frame.

Zingers and hot pixels are added to the integer counts after the Poisson draw (clipped at the
saturation value), never on masked pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Artefacts:
    """The artefacts of one simulated run.

    Attributes:
        transmission: (ny, nx) float32 fraction of the expected photons recorded (1 outside
            the beamstop shadow), or None (no beamstop).
        halo: (ny, nx) float32 mean scatter photons per pixel (before speckle and shadow), or
            None.
        speckle: speckle contrast c in [0, 1].
        zingers_per_image, zinger_photons: zinger rate (per frame) and mean counts.
        hot_idx: (h,) flat indices of the unmasked hot pixels; hot_photons: their mean counts.
    """

    transmission: np.ndarray | None
    halo: np.ndarray | None
    speckle: float
    zingers_per_image: float
    zinger_photons: float
    hot_idx: np.ndarray
    hot_photons: float

    @property
    def any_expected(self) -> bool:
        """Whether the expected-photon image changes (shadow or halo)."""
        return self.transmission is not None or self.halo is not None


def beamstop_transmission(shape: tuple[int, int], center_px: tuple[float, float],
                          radius_px: float, arm_width_px: float, arm_angle_deg: float,
                          transmission: float, edge_px: float = 1.5) -> np.ndarray:
    """(ny, nx) float32 recorded fraction of the photons behind a beamstop disc + arm.

    The shadow is {distance to the disc centre ≤ R} ∪ {distance to the arm's centre line
    ≤ W/2 and on the arm's side of the centre}; ``transmission`` inside, 1 outside, linear over
    ``edge_px`` across the boundary. Pixel (0, 0) centre = (0, 0).
    """
    ny, nx = shape
    bx, by = center_px
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    dx, dy = x - bx, y - by
    # signed distance outside the shadow (≤ 0 inside)
    out = np.hypot(dx, dy) - radius_px
    if arm_width_px > 0:
        a = np.deg2rad(arm_angle_deg)
        ux, uy = np.cos(a), np.sin(a)
        along = dx * ux + dy * uy
        across = np.abs(-dx * uy + dy * ux)
        arm = np.where(along >= 0, across - arm_width_px / 2.0, np.inf)
        out = np.minimum(out, arm)
    edge = max(float(edge_px), 1e-6)
    f = np.clip(out / edge + 0.5, 0.0, 1.0)
    return (transmission + (1.0 - transmission) * f).astype(np.float32)


def scatter_halo(shape: tuple[int, int], center_px: tuple[float, float], photons: float,
                 length_px: float) -> np.ndarray:
    """(ny, nx) float32 mean parasitic-scatter photons per pixel: photons · exp(−r / length)."""
    ny, nx = shape
    bx, by = center_px
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    r = np.hypot(x - bx, y - by)
    return (photons * np.exp(-r / max(float(length_px), 1e-6))).astype(np.float32)


def make_artefacts(p, shape: tuple[int, int], center_px: tuple[float, float],
                   pixel_mask: np.ndarray) -> Artefacts:
    """The :class:`Artefacts` of preset ``p`` (a :class:`jfx.sim.presets.SimPreset`)."""
    trans = None
    if p.beamstop_radius_px > 0:
        trans = beamstop_transmission(shape, center_px, p.beamstop_radius_px,
                                      p.beamstop_arm_width_px, p.beamstop_arm_angle_deg,
                                      p.beamstop_transmission, p.beamstop_edge_px)
    halo = None
    if p.scatter_photons > 0:
        halo = scatter_halo(shape, center_px, p.scatter_photons, p.scatter_length_px)
    hot = np.zeros(0, dtype=np.int64)
    if p.hot_pixels > 0:
        good = np.flatnonzero(np.asarray(pixel_mask).reshape(-1) == 0)
        rng = np.random.default_rng(p.seed + 31)
        hot = np.sort(rng.choice(good, size=min(p.hot_pixels, good.size), replace=False))
    return Artefacts(transmission=trans, halo=halo, speckle=float(p.scatter_speckle),
                     zingers_per_image=float(p.zingers_per_image),
                     zinger_photons=float(p.zinger_photons), hot_idx=hot,
                     hot_photons=float(p.hot_pixel_photons))


def apply_expected(expected: np.ndarray, art: Artefacts, rng: np.random.Generator) -> np.ndarray:
    """Expected photons (ny, nx) with the speckled halo added and the shadow applied."""
    e = np.asarray(expected, dtype=np.float32)
    if art.halo is not None:
        halo = art.halo
        if art.speckle > 0:
            sp = rng.standard_exponential(halo.shape).astype(np.float32)
            halo = halo * ((1.0 - art.speckle) + art.speckle * sp)
        e = e + halo
    if art.transmission is not None:
        e = e * art.transmission
    return e


def apply_counts(counts: np.ndarray, art: Artefacts, pixel_mask: np.ndarray, saturation: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Integer frame with zingers and hot pixels added (not on masked pixels), clipped."""
    out = counts
    flat = out.reshape(-1)
    if art.hot_idx.size:
        add = rng.poisson(art.hot_photons, art.hot_idx.size)
        flat[art.hot_idx] = np.minimum(flat[art.hot_idx].astype(np.int64) + add, saturation)
    if art.zingers_per_image > 0:
        nz = int(rng.poisson(art.zingers_per_image))
        if nz:
            pos = rng.integers(0, flat.size, nz)
            pos = pos[np.asarray(pixel_mask).reshape(-1)[pos] == 0]
            add = np.rint(art.zinger_photons * rng.uniform(0.5, 1.5, pos.size)).astype(np.int64)
            flat[pos] = np.minimum(flat[pos].astype(np.int64) + add, saturation)
    return out
