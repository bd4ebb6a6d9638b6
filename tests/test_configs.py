"""Every config-group option composes and instantiates; settings classes validate their fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from jfx.config import (ProcessSettings, ScaleJobSettings, compose, conf_dir, process_settings,
                        scale_settings)


CONF = conf_dir()
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


EXTRA = {  # options that need a companion setting to be valid
    ("index", "ffbidx"): ["crystal.unit_cell=[79,79,38,90,90,90]"],
    ("refine", "pixelrefine"): ["scale.reference_mtz=<mtz>"],
}


def test_groups_are_the_documented_ones():
    assert GROUPS == ["index", "integrate", "partiality", "refine", "scale", "spotfind"]
    assert options("index") == ["auto", "ffbidx", "fft", "fftw", "none"]
    assert options("refine") == ["beam_and_lattice", "none", "orientation", "pixelrefine"]
    assert options("partiality") == ["fixed", "rot", "unity"]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(tmp_path, group, option):
    mtz = tmp_path / "ref.mtz"
    mtz.write_bytes(b"x")
    extra = [e.replace("<mtz>", str(mtz)) for e in EXTRA.get((group, option), [])]
    cfg = compose("process", [f"{group}={option}", *extra])
    node = cfg[group]
    cls = get_class(node._target_)
    keys = set(node.keys()) - {"_target_"}
    assert keys == {f.name for f in dataclasses.fields(cls)}  # YAML keys = class fields
    obj = instantiate(node, _convert_="all")
    assert isinstance(obj, cls)
    settings = process_settings(cfg)
    assert isinstance(settings, ProcessSettings)
    assert getattr(settings, group) == obj


@pytest.mark.parametrize("name", ["process", "scale"])
def test_primary_configs_every_node_has_matching_target(name):
    cfg = compose(name, [])
    for key in cfg:
        node = cfg[key]
        cls = get_class(node._target_)
        assert set(node.keys()) - {"_target_"} == {f.name for f in dataclasses.fields(cls)}, key
        # defaults in YAML equal the dataclass defaults (one source of truth for both)
        obj = instantiate(node, _convert_="all")
        assert obj == cls(), key
    s = process_settings(cfg) if name == "process" else scale_settings(cfg)
    assert isinstance(s, ProcessSettings if name == "process" else ScaleJobSettings)


def test_conf_dir_env_override(tmp_path, monkeypatch):
    (tmp_path / "process.yaml").write_text("x: 1\n")
    monkeypatch.setenv("JFX_CONF_DIR", str(tmp_path))
    assert conf_dir() == tmp_path.resolve()
    monkeypatch.setenv("JFX_CONF_DIR", str(tmp_path / "absent"))
    assert conf_dir() == Path(__file__).resolve().parents[1] / "conf"


def test_compose_has_no_side_effects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose("process", ["spotfind.sigma=4"])
    assert cfg.spotfind.sigma == 4
    assert list(tmp_path.iterdir()) == []  # no outputs/ or .hydra/ folders, no log files
    assert Path.cwd() == tmp_path


@pytest.mark.parametrize("override,needle", [
    ("spotfind.nope=1", "Could not override 'spotfind.nope'"),
    ("index=foo", "Could not find 'index/foo'"),
    ("spotfind.sigma=1,2", "sweep"),
])
def test_bad_overrides(override, needle):
    with pytest.raises(ValueError, match=needle) as e:
        compose("process", [override])
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- settings validation
from jfx.azint.settings import AzintSettings  # noqa: E402
from jfx.index.settings import CrystalSettings, IndexSettings, RotationSettings  # noqa: E402
from jfx.integrate.settings import SummationIntegratorSettings  # noqa: E402
from jfx.refine.settings import PixelRefineSettings, RefineSettings  # noqa: E402
from jfx.scale.settings import PartialitySettings, ScaleSettings  # noqa: E402
from jfx.config import GeneralSettings  # noqa: E402
from jfx.spotfind.settings import ThresholdSpotFinderSettings  # noqa: E402
from jfx.symmetry.groups import cell_fits_space_group, check_cell_and_space_group  # noqa: E402


@pytest.mark.parametrize("cls,kwargs", [
    (ThresholdSpotFinderSettings, {"sigma": -1}),
    (ThresholdSpotFinderSettings, {"max_spots": 0}),
    (ThresholdSpotFinderSettings, {"high_resolution_A": 2.0, "low_resolution_A": 1.0}),
    (ThresholdSpotFinderSettings, {"keep": "random"}),
    (IndexSettings, {"algorithm": "magic"}),
    (CrystalSettings, {"unit_cell": [10, 10, 10, 90, 90, 90], "space_group": 0}),
    (CrystalSettings, {"unit_cell": [10, 10, 12, 90, 90, 90], "space_group": 195}),
    (CrystalSettings, {"unit_cell": [10, 10, 12, 90, 90, 90], "space_group": 168}),
    (CrystalSettings, {"unit_cell": [10, 11, 12, 90, 95, 90], "space_group": 16}),
    (CrystalSettings, {"unit_cell": [10, 11, 12, 95, 90, 90], "space_group": 3}),
    (CrystalSettings, {"unit_cell": [10, 0, 12, 90, 90, 90]}),
    (RotationSettings, {"two_pass_images": 0}),
    (RotationSettings, {"force_lattice": [1, 2, 3, 2, 4, 6, 0, 0, 1]}),
    (RefineSettings, {"preset": "none", "free": ["lattice.cell"]}),
    (RefineSettings, {"preset": "orientation", "free": ["lattice.spin"]}),
    (PixelRefineSettings, {"profile_multiplier": 0}),
    (PixelRefineSettings, {"bandwidth_fwhm": -0.1}),
    (SummationIntegratorSettings, {"radii_px": [3, 3, 3]}),
    (PartialitySettings, {"model": "gauss"}),
    (ScaleSettings, {"iterations": 0}),
    (ScaleSettings, {"min_partiality": -0.1}),
    (ScaleSettings, {"merge": "maybe"}),
    (ScaleSettings, {"solver": "adam"}),
    (ScaleSettings, {"solver": "optax"}),  # renamed lbfgs
    (RefineSettings, {"solver": "adam"}),
    (ScaleSettings, {"intensity": "peak"}),
    (ScaleSettings, {"likelihood": "cauchy"}),
    (ScaleSettings, {"n_shells": 0}),
    (RefineSettings, {"scan_varying_deg": 0}),
    (SummationIntegratorSettings, {"threads": 0}),
    (AzintSettings, {"q_spacing_invA": -0.02}),
    (AzintSettings, {"low_q_invA": -1.0}),
    (AzintSettings, {"low_q_invA": 1.0, "high_q_invA": 1.0}),
    (AzintSettings, {"n_azimuthal_bins": 1.5}),
    (AzintSettings, {"polarization": "sometimes"}),
    (GeneralSettings, {"batch_size": 0}),
    (GeneralSettings, {"batch_size": 100000}),
    (GeneralSettings, {"device": "tpu"}),
])

def test_settings_reject_bad_values(cls, kwargs):
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cell,sg,fits", [
    ((79, 79, 38, 90, 90, 90), 96, True),       # tetragonal
    ((79, 80, 38, 90, 90, 90), 96, False),
    ((50, 60, 70, 90, 100, 90), 4, True),       # monoclinic, unique axis b
    ((50, 60, 70, 100, 90, 90), 4, False),
    ((50, 50, 60, 90, 90, 120), 168, True),     # hexagonal
    ((50, 50, 60, 90, 90, 90), 168, False),
    ((50, 50, 50, 80, 80, 80), 146, True),      # R3 on rhombohedral axes
    ((50, 50, 60, 90, 90, 120), 146, True),     # R3 on hexagonal axes
    ((50, 50, 50, 80, 80, 80), 143, False),     # P3 needs hexagonal axes
    ((40, 40, 40, 90, 90, 90), 225, True),      # cubic
    ((40, 40, 40.5, 90, 90, 90), 225, False),
    ((10, 20, 30, 70, 80, 100), 1, True),       # triclinic: anything
])
def test_cell_fits_space_group(cell, sg, fits):
    assert cell_fits_space_group(cell, sg) is fits


def test_check_cell_and_space_group_normalises():
    assert check_cell_and_space_group(["79", 79, 38, 90, 90, 90], 96.0) == (
        (79.0, 79.0, 38.0, 90.0, 90.0, 90.0), 96)
    assert check_cell_and_space_group(None, None) == (None, None)


def test_solver_settings_name_one_algorithm_once():
    s = process_settings(compose("process", ["refine.solver=lbfgs", "scale.solver=lbfgs"]))
    assert s.refine.solver == "lbfgs" and s.scale.solver == "lbfgs"
    assert process_settings(compose("process", ["refine=orientation"])).refine.solver == "lm"
    with pytest.raises(ValueError, match="Could not override 'integrate.solver'"):
        compose("process", ["integrate.solver=lm"])
    with pytest.raises(ValueError, match=r"^scale.solver must be one of lm\|lbfgs, got 'optax'$"):
        process_settings(compose("process", ["scale.solver=optax"]))


def test_index_auto_resolution():
    s = IndexSettings(algorithm="auto")
    assert s.resolve(cell_known=True, gpu=False) == "ffbidx"
    assert s.resolve(cell_known=False, gpu=True) == "fft"
    assert s.resolve(cell_known=False, gpu=False) == "fftw"
    assert IndexSettings(algorithm="FFT").resolve(cell_known=True, gpu=False) == "fft"


def test_resolved_yaml_round_trips():
    cfg = compose("process", ["crystal.unit_cell=[79,79,38,90,90,90]", "crystal.space_group=96"])
    again = OmegaConf.create(OmegaConf.to_yaml(cfg))
    assert process_settings(again) == process_settings(cfg)


def test_pipeline_settings_defaults_and_coercion():
    a = AzintSettings(q_spacing_invA="0.05", n_azimuthal_bins=8.0, solid_angle="no")
    assert a.q_spacing_invA == 0.05 and a.n_azimuthal_bins == 8 and a.solid_angle is False
    g = GeneralSettings(batch_size="16", device="GPU")
    assert g.batch_size == 16 and g.device == "gpu"
    cfg = compose("process", ["azint.high_q_invA=2.5", "general.batch_size=2"])
    s = process_settings(cfg)
    assert s.azint == AzintSettings(high_q_invA=2.5) and s.general.batch_size == 2
