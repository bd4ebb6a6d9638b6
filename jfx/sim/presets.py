"""Simulation presets: plain dataclasses of parameters, overridable by ``key=value``.

Units are in the field names (deg, Å, mm, keV); angles are degrees here (configuration).
"""

from __future__ import annotations

import dataclasses
import math
import typing

from jfx.physics.partiality import STILL_PROFILES
from jfx.sim.structure import LYSOZYME_CELL, LYSOZYME_SPACE_GROUP


@dataclasses.dataclass(frozen=True)
class SimPreset:
    """Everything ``jfx-simulate`` needs to build an experiment.

    Attributes (defaults = the ``lyso_rotation`` demo):
        name: preset name.
        kind: "rotation" or "still".
        n_images: number of images.
        modules: JUNGFRAU modules (1, 2 = 1M, 8 = 4M); ``crop`` overrides the detector.
        crop: (ny, nx) gap-free detector instead of JUNGFRAU modules (tests); None = modules.
        distance_mm: sample–detector distance.
        wavelength_A: wavelength (Å).
        beam_center_px: (bx, by) or None = (nx/2 − 0.5 + 12.3, ny/2 − 0.5 − 7.6).
        cell: (a, b, c, α, β, γ) (Å, deg).
        space_group: number or H-M symbol.
        write_cell: write unit cell / space group into the master file.
        d_min_A: resolution limit of the structure factors.
        n_atoms: random light atoms (C/N/O/S); n_heavy: heavy atoms (``heavy_element``).
        anomalous: use f′/f″ at the beam energy (Cromer–Liberman) for all atoms.
        atom_b_range: (min, max) B of the random atoms (Å²).
        model: PDB/mmCIF path (replaces random atoms, no anomalous) or None.
        mean_photons: photons of an average fully recorded reflection with L·P·DW = 1
            (sets ``scale`` = mean_photons / <I_true>).
        bfactor_A2: extra overall B applied to intensities.
        mosaicity_deg: mosaic spread σ_M (Gaussian σ, deg).
        osc_deg / start_deg / axis: rotation increment, start, axis (lab frame).
        bandwidth_fwhm: Δλ/λ FWHM (stills: σ_ε).
        partiality_profile: stills rocking-curve (Ewald-offset) shape, ``gaussian`` (default)
            or ``lorentzian`` (the Lorentzian of the same FWHM; cctbx.xfel/PRIME's model).
        domain_sigma_invA: stills mosaic-domain term σ0 of σ_ε (Å⁻¹); a domain of size D (Å)
            gives σ0 = 1/D (Sauter et al. 2014, Acta Cryst. D70, 3299). 0 = none.
        divergence_deg: stills beam divergence σ_div (deg, Gaussian σ per axis across the
            beam): σ_ε gains k sin 2θ σ_div. 0 = none.
        cell_spread: stills, relative σ of a per-crystal isotropic cell change: crystal i has
            a, b, c × (1 + δ_i), δ_i ~ N(0, cell_spread²), angles unchanged (I_true(hkl) kept).
            0 = all crystals have ``cell``.
        polarization_fraction: beam polarisation fraction (0.5 = unpolarised).
        sensor_material / sensor_thickness_mm: the sensor (written to the master file).
        detection_efficiency: reflections record QE = 1 − exp(−μt/cos θ_in) of their photons
            (:func:`jfx.physics.detector.detection_efficiency`).
        parallax: spots lie where the sensor absorbs their ray on average
            (:func:`jfx.physics.detector.parallax_offset_mm`), not where it meets the surface.
        spot_sigma_px / spot_sigma_growth: spot width σ = σ_px (1 + g tan 2θ).
        background / water_ring / water_ring_d_A: background model (photons/px).
        blank_fraction: stills, fraction of images without a crystal.
        n_dead / n_hot: random masked sensor pixels.
        dtype: image dtype; saturation_value: None = type maximum.
        noise: Poisson noise on (False = expected counts rounded to integers).
        min_fraction: observations below this fraction/partiality are not simulated.
        image_scale_sigma: per-image scale factor g_i = exp(N(0, σ²)), i.e. σ of ln g (stills:
            crystal volume and beam intensity; rotation: beam/absorption drift), 0 = none.
        image_bfactor_sd_A2: per-image extra B_i ~ N(0, sd²) applied as exp(−2 B_i s²) (radiation
            damage / crystal quality), 0 = none.
        seed: random seed (atoms, orientation, noise, bad pixels).

    Real-frame artefacts (:mod:`jfx.sim.artefacts`; all off by default):
        beamstop_radius_px: beamstop disc radius (px) centred on the beam; 0 = no beamstop.
        beamstop_arm_width_px / beamstop_arm_angle_deg: the arm holding it (width px, 0 = no
            arm; direction deg, 0 = +x, 90 = +y), from the disc to the detector edge.
        beamstop_transmission: fraction of the photons recorded in the shadow (not masked).
        beamstop_edge_px: width of the shadow's edge ramp (penumbra, px).
        scatter_photons / scatter_length_px: parasitic-scatter halo around the beam,
            photons/px = scatter_photons · exp(−r / scatter_length_px).
        scatter_speckle: speckle contrast c of the halo (factor (1 − c) + c·Exp(1) per pixel
            and frame).
        zingers_per_image / zinger_photons: mean zingers per frame (single pixels) and their
            mean extra counts.
        hot_pixels / hot_pixel_photons: unmasked hot pixels (fixed) and their mean extra
            counts per frame.
    """

    name: str = "lyso_rotation"
    kind: str = "rotation"
    n_images: int = 25
    modules: int = 2
    crop: tuple[int, int] | None = None
    distance_mm: float = 80.0
    wavelength_A: float = 1.0
    beam_center_px: tuple[float, float] | None = None
    cell: tuple[float, ...] = LYSOZYME_CELL
    space_group: int | str = LYSOZYME_SPACE_GROUP
    write_cell: bool = True
    d_min_A: float = 2.0
    n_atoms: int = 1000
    n_heavy: int = 10
    heavy_element: str = "S"
    anomalous: bool = False
    atom_b_range: tuple[float, float] = (15.0, 25.0)
    model: str | None = None
    mean_photons: float = 150.0
    bfactor_A2: float = 0.0
    mosaicity_deg: float = 0.15
    osc_deg: float = 0.5
    start_deg: float = 0.0
    axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    bandwidth_fwhm: float = 0.0
    partiality_profile: str = "gaussian"
    domain_sigma_invA: float = 0.0
    divergence_deg: float = 0.0
    cell_spread: float = 0.0
    polarization_fraction: float = 0.99
    sensor_material: str = "Si"
    sensor_thickness_mm: float = 0.32
    detection_efficiency: bool = True
    parallax: bool = True
    spot_sigma_px: float = 1.0
    spot_sigma_growth: float = 0.0
    background: float = 0.3
    water_ring: float = 0.8
    water_ring_d_A: float = 3.45
    blank_fraction: float = 0.0
    n_dead: int = 20
    n_hot: int = 5
    dtype: str = "int32"
    saturation_value: int | None = None
    noise: bool = True
    min_fraction: float = 1e-3
    image_scale_sigma: float = 0.0
    image_bfactor_sd_A2: float = 0.0
    seed: int = 1
    beamstop_radius_px: float = 0.0
    beamstop_arm_width_px: float = 0.0
    beamstop_arm_angle_deg: float = 0.0
    beamstop_transmission: float = 0.02
    beamstop_edge_px: float = 1.5
    scatter_photons: float = 0.0
    scatter_length_px: float = 60.0
    scatter_speckle: float = 1.0
    zingers_per_image: float = 0.0
    zinger_photons: float = 300.0
    hot_pixels: int = 0
    hot_pixel_photons: float = 200.0


PRESETS: dict[str, SimPreset] = {
    "lyso_rotation": SimPreset(),
    "lyso_serial": SimPreset(
        name="lyso_serial",
        kind="still",
        n_images=20,
        distance_mm=80.0,
        mosaicity_deg=0.05,
        bandwidth_fwhm=5e-3,
        mean_photons=100.0,
        blank_fraction=0.2,
        osc_deg=0.0,
    ),
    # stills with what real frames have: a beamstop shadow with its arm (not masked),
    # speckled direct-beam scatter, zingers, unmasked hot pixels, a PILATUS-like background
    # (~12 photons/px: Poisson tails give thousands of single-pixel 3-sigma outliers per frame)
    # and blank frames (issue 11; tests/spotfind/test_real_frames.py)
    "lyso_serial_real": SimPreset(
        name="lyso_serial_real",
        kind="still",
        n_images=20,
        distance_mm=80.0,
        mosaicity_deg=0.05,
        bandwidth_fwhm=5e-3,
        mean_photons=1500.0,
        blank_fraction=0.25,
        osc_deg=0.0,
        background=12.0,
        water_ring=6.0,
        beamstop_radius_px=25.0,
        beamstop_arm_width_px=30.0,
        beamstop_arm_angle_deg=-60.0,
        beamstop_transmission=0.02,
        scatter_photons=150.0,
        scatter_length_px=40.0,
        scatter_speckle=1.0,
        zingers_per_image=30.0,
        zinger_photons=300.0,
        hot_pixels=10,
        hot_pixel_photons=300.0,
    ),
    "anomalous_rotation": SimPreset(
        name="anomalous_rotation",
        wavelength_A=0.9795,  # Se K edge (12.658 keV)
        n_images=30,
        n_atoms=1000,
        n_heavy=8,
        heavy_element="Se",
        anomalous=True,
        mean_photons=250.0,
    ),
    "monoclinic": SimPreset(
        name="monoclinic",
        cell=(40.0, 55.0, 60.0, 90.0, 105.0, 90.0),
        space_group=4,
        write_cell=False,
        n_atoms=700,
        n_heavy=4,
        n_images=30,
        osc_deg=0.5,
        mosaicity_deg=0.1,
    ),
}


def _convert(value: str, tp) -> typing.Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    v = value.strip()
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if v.lower() in ("none", "null", ""):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(v, a)
            except (ValueError, TypeError) as exc:
                errors.append(exc)
        raise ValueError(f"cannot parse {value!r}")
    if origin is tuple:
        parts = [p for p in v.strip("()[]").replace(" ", ",").split(",") if p]
        inner = args[0] if args else float
        vals = tuple(_convert(p, inner) for p in parts)
        if args and args[-1] is not Ellipsis and len(vals) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values, got {value!r}")
        return vals
    if tp is bool:
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if tp is int:
        return int(v)
    if tp is float:
        return float(v)
    if tp is str:
        return v
    raise TypeError(f"unsupported type {tp}")


def get_preset(name: str) -> SimPreset:
    """Preset by name; ValueError lists the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name]


def apply_overrides(preset: SimPreset, overrides: dict[str, typing.Any] | list[str]) -> SimPreset:
    """Return ``preset`` with fields replaced.

    ``overrides`` is a dict (typed values) or a list of ``key=value`` strings (parsed with
    the field's type: tuples comma-separated, ``none`` for optional fields).
    """
    hints = typing.get_type_hints(SimPreset)
    changes: dict[str, typing.Any] = {}
    items = overrides.items() if isinstance(overrides, dict) else None
    if items is None:
        items = []
        for tok in overrides:
            if "=" not in tok:
                raise ValueError(f"override {tok!r} is not key=value")
            k, v = tok.split("=", 1)
            items.append((k.strip(), v))
    for k, v in items:
        if k not in hints:
            raise ValueError(f"unknown simulation parameter {k!r}")
        if isinstance(v, str) and hints[k] is not str:
            try:
                v = _convert(v, hints[k])
            except (ValueError, TypeError):
                raise ValueError(f"bad value for {k}: {v!r}") from None
        changes[k] = v
    return validate(dataclasses.replace(preset, **changes))


def validate(p: SimPreset) -> SimPreset:
    """Check physical sanity; ValueError with a one-line message otherwise."""
    if p.kind not in ("rotation", "still"):
        raise ValueError(f"kind must be rotation or still, got {p.kind!r}")
    if p.n_images < 1:
        raise ValueError("n_images must be ≥ 1")
    if p.kind == "rotation" and (p.osc_deg == 0 or abs(p.osc_deg) * p.n_images > 360.0):
        raise ValueError("rotation needs osc_deg ≠ 0 and a sweep of at most 360°")
    for k in ("distance_mm", "wavelength_A", "d_min_A", "spot_sigma_px"):
        if not getattr(p, k) > 0:
            raise ValueError(f"{k} must be > 0")
    if p.mosaicity_deg < 0 or p.bandwidth_fwhm < 0 or p.mean_photons < 0:
        raise ValueError("mosaicity_deg, bandwidth_fwhm and mean_photons must be ≥ 0")
    if p.kind == "still" and not (p.mosaicity_deg > 0 or p.bandwidth_fwhm > 0
                                  or p.domain_sigma_invA > 0 or p.divergence_deg > 0):
        raise ValueError("stills need mosaicity_deg, bandwidth_fwhm, domain_sigma_invA or "
                         "divergence_deg > 0")
    if p.kind == "rotation" and p.mosaicity_deg <= 0:
        raise ValueError("rotation needs mosaicity_deg > 0")
    if p.partiality_profile not in STILL_PROFILES:
        raise ValueError(f"partiality_profile must be {' or '.join(STILL_PROFILES)}, "
                         f"got {p.partiality_profile!r}")
    for k in ("domain_sigma_invA", "divergence_deg", "cell_spread"):
        v = getattr(p, k)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{k} must be a finite number ≥ 0, got {v!r}")
    if p.cell_spread >= 0.2:
        raise ValueError(f"cell_spread must be < 0.2 (relative σ), got {p.cell_spread!r}")
    if p.kind == "rotation":
        for k, off in (("partiality_profile", "gaussian"), ("domain_sigma_invA", 0.0),
                       ("divergence_deg", 0.0), ("cell_spread", 0.0)):
            if getattr(p, k) != off:
                raise ValueError(f"{k} applies to stills only (kind=still)")
    if len(p.cell) != 6:
        raise ValueError("cell needs 6 values a,b,c,alpha,beta,gamma")
    if p.dtype not in ("int16", "int32", "uint16", "uint32"):
        raise ValueError(f"dtype must be int16, int32, uint16 or uint32, got {p.dtype!r}")
    if not (p.image_scale_sigma >= 0 and p.image_bfactor_sd_A2 >= 0
            and math.isfinite(p.image_scale_sigma) and math.isfinite(p.image_bfactor_sd_A2)):
        raise ValueError("image_scale_sigma and image_bfactor_sd_A2 must be ≥ 0")
    if not 0.0 <= p.beamstop_transmission <= 1.0 or not 0.0 <= p.scatter_speckle <= 1.0:
        raise ValueError("beamstop_transmission and scatter_speckle must be in [0, 1]")
    for k in ("beamstop_radius_px", "beamstop_arm_width_px", "beamstop_edge_px", "scatter_photons",
              "zingers_per_image", "zinger_photons", "hot_pixels", "hot_pixel_photons"):
        if getattr(p, k) < 0:
            raise ValueError(f"{k} must be ≥ 0")
    if not p.sensor_thickness_mm > 0:
        raise ValueError("sensor_thickness_mm must be > 0")
    if (p.detection_efficiency or p.parallax) and p.sensor_material.strip().lower() not in (
            "si", "silicon", "ge", "germanium", "gaas", "gallium arsenide", "cdte",
            "cadmium telluride"):
        raise ValueError(f"sensor_material {p.sensor_material!r} has no attenuation table "
                         "(Si, Ge, GaAs, CdTe); set detection_efficiency=false parallax=false")
    if not p.scatter_length_px > 0:
        raise ValueError("scatter_length_px must be > 0")
    if not 0.0 <= p.blank_fraction <= 1.0:
        raise ValueError("blank_fraction must be in [0, 1]")
    if p.crop is None and (p.modules < 1 or (p.modules > 1 and p.modules % 2)):
        raise ValueError(f"modules must be 1 or even, got {p.modules}")
    return p
