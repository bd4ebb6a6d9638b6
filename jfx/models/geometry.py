"""Experimental geometry: beam, detector, goniometer.

Frame and conventions (see docs/conventions.md, identical to the file contract):

* Laboratory frame = NXmx / McStas: z along the beam (direction of propagation), y up,
  x completing a right-handed set (horizontal). The incident wave vector is
  ``s0 = beam.direction / wavelength`` (|s0| = 1/λ, Å⁻¹).
* Pixel coordinates (x, y): x along the detector fast axis, y along the slow axis, in
  pixels; the **centre of the first pixel is (0.0, 0.0)**.
* The lab position (mm) of pixel (x, y) is

      P(x, y) = D · b̂ + (x − bx) · px · f̂ + (y − by) · py · ŝ

  where b̂ is the beam direction, D = ``distance_mm`` is the distance from the sample to
  the point where the direct beam hits the detector (measured along the beam), (bx, by) =
  ``beam_center_px`` is that point in pixels, and f̂/ŝ are the fast/slow pixel directions.
  For an untilted Jungfraujoch detector f̂ = (1,0,0), ŝ = (0,1,0), so
  P = ((x − bx)·p, (y − by)·p, D). Other files (e.g. DLS EIGER) use f̂ = (−1,0,0),
  ŝ = (0,−1,0); the reader always takes the vectors from the file.
* Rotation: the sample is rotated by the right-handed rotation of angle ω about
  ``goniometer.axis`` (NXtransformations convention). Image i spans
  [start + i·increment, start + (i+1)·increment]. Angles are radians here, degrees in files.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass, static


@pytree_dataclass
class Beam:
    """Incident beam.

    Attributes:
        wavelength_A: wavelength λ (Å), scalar.
        direction: (3,) unit vector of propagation, lab frame (normally (0, 0, 1)).
        bandwidth_fwhm: relative bandwidth Δλ/λ (FWHM); 0 = monochromatic.
        polarization_fraction: fraction p of the intensity polarised with its electric field
            along ``polarization_axis`` (0.5 = unpolarised; ~0.99 at a synchrotron).
        polarization_axis: (3,) unit vector of the dominant E-field direction (⊥ beam).
    """

    wavelength_A: jnp.ndarray
    direction: jnp.ndarray
    bandwidth_fwhm: jnp.ndarray
    polarization_fraction: jnp.ndarray
    polarization_axis: jnp.ndarray

    @staticmethod
    def create(
        wavelength_A: float,
        direction=(0.0, 0.0, 1.0),
        bandwidth_fwhm: float = 0.0,
        polarization_fraction: float = 0.99,
        polarization_axis=(1.0, 0.0, 0.0),
    ) -> "Beam":
        d = np.asarray(direction, dtype=np.float64)
        e = np.asarray(polarization_axis, dtype=np.float64)
        return Beam(
            wavelength_A=jnp.asarray(wavelength_A, dtype=jnp.float64),
            direction=jnp.asarray(d / np.linalg.norm(d)),
            bandwidth_fwhm=jnp.asarray(bandwidth_fwhm, dtype=jnp.float64),
            polarization_fraction=jnp.asarray(polarization_fraction, dtype=jnp.float64),
            polarization_axis=jnp.asarray(e / np.linalg.norm(e)),
        )

    @property
    def s0(self) -> jnp.ndarray:
        """(3,) incident wave vector (Å⁻¹), |s0| = 1/λ."""
        return self.direction / self.wavelength_A

    @property
    def energy_keV(self) -> jnp.ndarray:
        return 12.398419843320026 / self.wavelength_A


@pytree_dataclass
class Detector:
    """A flat, single-panel pixel detector (see the module docstring for the frame).

    Attributes:
        distance_mm: sample → beam-centre distance along the beam (mm), scalar.
        beam_center_px: (2,) (bx, by) pixel position hit by the direct beam.
        fast_axis: (3,) unit vector of increasing x (lab frame).
        slow_axis: (3,) unit vector of increasing y (lab frame), ⊥ ``fast_axis``.
        pixel_size_mm: static (px, py) pixel pitch (mm).
        shape: static (ny, nx) image shape in pixels.
        sensor_thickness_mm: static sensor thickness (mm).
        sensor_material: static material name (e.g. "Si").
        parallax: static; when True the pixel ↔ ray transforms of :mod:`jfx.physics.diffraction`
            (``lab_to_pixel``, ``pixel_s1``) place a ray where the sensor absorbs it on average
            (:func:`jfx.physics.detector.parallax_offset_mm`), not where it meets the surface.
    """

    distance_mm: jnp.ndarray
    beam_center_px: jnp.ndarray
    fast_axis: jnp.ndarray
    slow_axis: jnp.ndarray
    pixel_size_mm: tuple[float, float] = static((0.075, 0.075))
    shape: tuple[int, int] = static((514, 1030))
    sensor_thickness_mm: float = static(0.32)
    sensor_material: str = static("Si")
    parallax: bool = static(False)

    @staticmethod
    def create(
        distance_mm: float,
        beam_center_px,
        shape: tuple[int, int],
        pixel_size_mm: float | tuple[float, float] = 0.075,
        fast_axis=(1.0, 0.0, 0.0),
        slow_axis=(0.0, 1.0, 0.0),
        sensor_thickness_mm: float = 0.32,
        sensor_material: str = "Si",
        parallax: bool = False,
    ) -> "Detector":
        if np.isscalar(pixel_size_mm):
            pixel_size_mm = (float(pixel_size_mm), float(pixel_size_mm))
        f = np.asarray(fast_axis, dtype=np.float64)
        s = np.asarray(slow_axis, dtype=np.float64)
        return Detector(
            distance_mm=jnp.asarray(distance_mm, dtype=jnp.float64),
            beam_center_px=jnp.asarray(beam_center_px, dtype=jnp.float64),
            fast_axis=jnp.asarray(f / np.linalg.norm(f)),
            slow_axis=jnp.asarray(s / np.linalg.norm(s)),
            pixel_size_mm=(float(pixel_size_mm[0]), float(pixel_size_mm[1])),
            shape=(int(shape[0]), int(shape[1])),
            sensor_thickness_mm=float(sensor_thickness_mm),
            sensor_material=str(sensor_material),
            parallax=bool(parallax),
        )

    @property
    def normal(self) -> jnp.ndarray:
        """(3,) unit normal f̂ × ŝ (points away from the sample for standard setups)."""
        n = jnp.cross(self.fast_axis, self.slow_axis)
        return n / jnp.linalg.norm(n)


@pytree_dataclass
class Goniometer:
    """Single-axis rotation (scan) goniometer.

    Attributes:
        axis: (3,) unit rotation axis, lab frame; positive angles are right-handed about it.
        start_rad: angle at the start of image 0 (rad).
        increment_rad: rotation per image (rad); image i spans
            [start + i·increment, start + (i+1)·increment].
    """

    axis: jnp.ndarray
    start_rad: jnp.ndarray
    increment_rad: jnp.ndarray

    @staticmethod
    def create(axis, start_deg: float, increment_deg: float) -> "Goniometer":
        a = np.asarray(axis, dtype=np.float64)
        return Goniometer(
            axis=jnp.asarray(a / np.linalg.norm(a)),
            start_rad=jnp.asarray(np.deg2rad(start_deg), dtype=jnp.float64),
            increment_rad=jnp.asarray(np.deg2rad(increment_deg), dtype=jnp.float64),
        )

    def angle_rad(self, image) -> jnp.ndarray:
        """Angle at the *start* of (possibly fractional) image number(s) ``image``."""
        return self.start_rad + jnp.asarray(image) * self.increment_rad

    def image_of_angle(self, angle_rad) -> jnp.ndarray:
        """Fractional image coordinate of an angle (image i covers [i, i+1))."""
        return (angle_rad - self.start_rad) / self.increment_rad


@pytree_dataclass
class Geometry:
    """Beam + detector + goniometer (``None`` for stills)."""

    beam: Beam
    detector: Detector
    goniometer: Goniometer | None = None

    @property
    def is_rotation(self) -> bool:
        return self.goniometer is not None
