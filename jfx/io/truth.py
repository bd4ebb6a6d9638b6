"""Ground-truth file of a simulation: ``<prefix>_truth.h5`` writer and reader.

Layout (all angles in degrees, lengths as named; lab frame NXmx/McStas, pixel (0,0) centre =
(0.0, 0.0)):

``/`` attributes: ``kind`` ("rotation"/"still"), ``n_images``, ``jfx_version``, ``preset``
(JSON of the simulation parameters).

``/geometry``: ``wavelength_A``, ``beam_direction`` (3), ``bandwidth_fwhm``,
``polarization_fraction``, ``polarization_axis`` (3), ``distance_mm``, ``beam_center_px``
(2: x, y), ``fast_axis``/``slow_axis`` (3), ``pixel_size_mm`` (2), ``image_shape`` (2: ny,
nx); rotation also ``rotation_axis`` (3), ``start_deg``, ``increment_deg``.

``/crystal``: ``cell`` (6), ``space_group`` (number), ``U`` (3×3, ω = 0),
``basis0`` (3×3 rows a, b, c in Å at ω = 0, rotation), ``basis`` (n_images×3×3, per image;
rotation: basis0 rotated to the start of the image; stills: NaN for blank images),
``U_images`` (n_images×3×3), ``mosaicity_deg``, ``scale`` (photons per e²),
``bfactor_A2``, ``spot_sigma_px``, ``spot_sigma_growth``.

``/images``: ``is_blank`` (uint8 [n]), ``n_reflections`` (int32 [n]), ``expected_photons``
(float64 [n], Σ expected spot photons on the image), ``scale_factor`` (float64 [n], per-image
scale g_i) and ``bfactor_A2`` (float64 [n], per-image extra B_i; expected photons include
g_i·exp(−2 B_i s²)).

``/observations`` — one row per reflection on one image (rotation: a diffraction event
split over the images its rocking curve touches):
``h, k, l`` (int32), ``image`` (int32), ``x``, ``y`` (px, spot centre), ``phi`` (deg,
centroid angle; NaN for stills), ``frame`` (centroid frame coordinate: image i covers
[i, i+1); stills image + 0.5), ``d`` (Å), ``partiality`` (rotation: fraction of the
reflection's integrated intensity recorded on this image; stills: peak-normalised
exp(−ε²/2σ_ε²)), ``lorentz`` (1/|e·(ŝ1×ŝ0)|; 1 for stills), ``polarization``, ``lp``
(lorentz × polarization), ``qe`` (the sensor's detection efficiency at the ray, 1 when the
preset's ``detection_efficiency`` is off), ``dw`` (exp(−2 B s²) of the overall B),
``expected_photons`` (scale · i_true · lp · qe · partiality · dw · g_i·exp(−2 B_i s²): the
mean photons of this reflection on this
image, before Poisson noise, including parts that fall on masked pixels or off the
detector), ``i_true`` (|F|², e²), ``sigma_px`` (spot Gaussian σ), ``zeta`` and
``event`` (rotation), ``eps`` and ``sigma_eps`` (stills, Å⁻¹).

``/merged`` — one row per reciprocal-ASU index (gemmi/CCP4 ASU): ``h, k, l``, ``i_true``
(mean of I(+) and I(−)), ``i_plus``, ``i_minus``, ``centric`` (uint8), ``absent`` (uint8),
attribute ``anomalous``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np

from jfx.io.output_set import atomic_path


@dataclasses.dataclass
class Truth:
    """Everything in a truth file (see the module docstring for each field)."""

    kind: str
    n_images: int
    geometry: dict
    crystal: dict
    images: dict
    observations: dict
    merged: dict
    preset: dict

    @property
    def is_rotation(self) -> bool:
        return self.kind == "rotation"

    def observations_on(self, image: int) -> dict:
        """Rows of ``observations`` for one image."""
        sel = self.observations["image"] == image
        return {k: v[sel] for k, v in self.observations.items()}


def write_truth(path: str | Path, truth: Truth) -> Path:
    """Write ``truth`` to ``path`` atomically (temp file + os.replace). Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["kind"] = truth.kind
            f.attrs["n_images"] = int(truth.n_images)
            f.attrs["preset"] = json.dumps(truth.preset)
            from jfx import __version__

            f.attrs["jfx_version"] = __version__
            for name in ("geometry", "crystal", "images", "observations", "merged"):
                g = f.create_group(name)
                for k, v in getattr(truth, name).items():
                    if isinstance(v, (str, bool)):
                        g.attrs[k] = v
                        continue
                    a = np.asarray(v)
                    kw = dict(compression="gzip", compression_opts=4) if a.size > 1024 else {}
                    g.create_dataset(k, data=a, **kw)
    return path


def read_truth(path: str | Path) -> Truth:
    """Read a truth file written by :func:`write_truth`."""
    with h5py.File(path, "r") as f:
        groups = {}
        for name in ("geometry", "crystal", "images", "observations", "merged"):
            g = f[name]
            d = {k: g[k][()] for k in g}
            d.update({k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()})
            groups[name] = d
        kind = f.attrs["kind"]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        return Truth(
            kind=kind,
            n_images=int(f.attrs["n_images"]),
            preset=json.loads(f.attrs["preset"]),
            **groups,
        )
