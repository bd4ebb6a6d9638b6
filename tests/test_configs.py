"""Every config-group option composes and instantiates into its group's interface; option
files name their own class and hold only non-default values; settings classes validate."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from jfx.azint.settings import AzintSettings
from jfx.config import (
    GeneralSettings,
    ProcessSettings,
    ScaleJobSettings,
    compose,
    conf_dir,
    config_dirs,
    group_options,
    process_settings,
    scale_settings,
)
from jfx.index.fft import FFTSettings
from jfx.index.settings import CrystalSettings, FFTWIndexing, RotationSettings
from jfx.integrate.settings import SummationIntegratorSettings
from jfx.refine.settings import (
    NoRefinement,
    OrientationRefinement,
    PixelRefineSettings,
    RefineSettings,
)
from jfx.scale.likelihood import HuberLikelihood, StudentTLikelihood
from jfx.scale.partiality import RotationPartiality
from jfx.scale.settings import ScaleSettings
from jfx.spotfind.settings import ThresholdSpotFinderSettings
from jfx.symmetry.groups import cell_fits_space_group, check_cell_and_space_group
from jfx.validate import config_defaults

CONF = conf_dir()
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


EXTRA = {  # options that need a companion setting to be valid
    ("index", "ffbidx"): ["crystal.unit_cell=[79,79,38,90,90,90]"],
    ("refine", "pixelrefine"): ["scale.reference_mtz=<mtz>"],
}


def test_groups_are_the_documented_ones():
    assert GROUPS == ["azint", "crystal", "general", "index", "integrate", "launcher",
                      "likelihood", "partiality", "pixel_background", "pixel_partiality",
                      "pixel_profile", "pixelrefine", "refine", "rotation", "scale",
                      "scale_model", "spotfind"]
    assert options("launcher") == ["local", "none", "slurm"]
    assert options("pixel_partiality") == ["gaussian", "lorentzian"]
    assert options("pixel_profile") == ["gaussian"]
    assert options("pixel_background") == ["plane"]
    assert options("index") == ["auto", "ffbidx", "fft", "fftw", "none"]
    assert options("refine") == ["beam_and_lattice", "none", "orientation", "pixelrefine"]
    assert options("partiality") == ["auto", "fixed", "rot", "unity"]
    assert options("likelihood") == ["huber", "normal", "student_t"]
    assert options("scale_model") == ["auto", "image", "physical"]
    assert options("general") == ["process", "scale"]
    assert group_options("partiality") == ["auto", "fixed", "rot", "unity"]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(tmp_path, group, option):
    mtz = tmp_path / "ref.mtz"
    mtz.write_bytes(b"x")
    extra = [e.replace("<mtz>", str(mtz)) for e in EXTRA.get((group, option), [])]
    primary = "scale" if (group, option) == ("general", "scale") else "process"
    cfg = compose(primary, [f"{group}={option}", *extra])
    node = cfg[group]
    cls = get_class(node._target_)
    # the option's schema: every config field of ITS class, with the class's defaults
    assert set(node.keys()) - {"_target_"} == set(config_defaults(cls))
    settings = process_settings(cfg) if primary == "process" else scale_settings(cfg)
    obj = getattr(settings, group)
    assert type(obj) is cls
    hints = typing.get_type_hints(ProcessSettings if primary == "process" else ScaleJobSettings)
    assert isinstance(obj, hints[group])  # the group's interface
    if not extra:
        assert obj == cls()  # the defaults come from the class


@pytest.mark.parametrize("path", sorted(CONF.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_option_files_name_their_class_and_hold_only_non_defaults(path):
    data = OmegaConf.to_container(OmegaConf.load(path))
    assert data["defaults"] == [f"{path.stem}_schema", "_self_"]
    cls = get_class(data["_target_"])
    assert dataclasses.is_dataclass(cls)
    defaults = config_defaults(cls)
    for key, value in data.items():
        if key not in ("defaults", "_target_"):
            assert key in defaults and value != defaults[key], key


def test_every_option_names_a_different_class():
    for group in GROUPS:
        targets = [OmegaConf.load(CONF / group / f"{o}.yaml")["_target_"] for o in options(group)]
        assert len(set(targets)) == len(targets), group


@pytest.mark.parametrize("name", ["process", "scale"])
def test_primary_configs_every_node_has_matching_target(name):
    cfg = compose(name, [])
    for key in cfg:
        node = cfg[key]
        cls = get_class(node._target_)
        assert set(node.keys()) - {"_target_"} == set(config_defaults(cls)), key
        obj = OmegaConf.to_container(node)
        assert {k: v for k, v in obj.items() if k != "_target_"} == config_defaults(cls), key
    s = process_settings(cfg) if name == "process" else scale_settings(cfg)
    assert isinstance(s, ProcessSettings if name == "process" else ScaleJobSettings)
    for key in cfg:
        assert getattr(s, key) == type(getattr(s, key))(), key  # defaults equal the class's


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


@pytest.mark.parametrize("cls,kwargs", [
    (ThresholdSpotFinderSettings, {"sigma": -1}),
    (ThresholdSpotFinderSettings, {"max_spots": 0}),
    (ThresholdSpotFinderSettings, {"high_resolution_A": 2.0, "low_resolution_A": 1.0}),
    (ThresholdSpotFinderSettings, {"keep": "random"}),
    (FFTWIndexing, {"tolerance": 0.5}),
    (FFTWIndexing, {"fft": {"max_cell_A": 2.0}}),
    (FFTSettings, {"n_directions": "many"}),
    (CrystalSettings, {"unit_cell": [10, 10, 10, 90, 90, 90], "space_group": 0}),
    (CrystalSettings, {"unit_cell": [10, 10, 12, 90, 90, 90], "space_group": 195}),
    (CrystalSettings, {"unit_cell": [10, 10, 12, 90, 90, 90], "space_group": 168}),
    (CrystalSettings, {"unit_cell": [10, 11, 12, 90, 95, 90], "space_group": 16}),
    (CrystalSettings, {"unit_cell": [10, 11, 12, 95, 90, 90], "space_group": 3}),
    (CrystalSettings, {"unit_cell": [10, 0, 12, 90, 90, 90]}),
    (RotationSettings, {"two_pass_images": 0}),
    (RotationSettings, {"force_lattice": [1, 2, 3, 2, 4, 6, 0, 0, 1]}),
    (NoRefinement, {"free": ["lattice.cell"]}),
    (OrientationRefinement, {"free": ["lattice.spin"]}),
    (RefineSettings, {"free": ["lattice.cell", "lattice.cell"]}),
    (PixelRefineSettings, {"profile_multiplier": 0}),
    (PixelRefineSettings, {"bandwidth_fwhm": -0.1}),
    (SummationIntegratorSettings, {"radii_px": [3, 3, 3]}),
    (RotationPartiality, {"mosaicity_deg": 0}),
    (RotationPartiality, {"refine_mosaicity": "perhaps"}),
    (ScaleSettings, {"iterations": 0}),
    (ScaleSettings, {"min_partiality": -0.1}),
    (ScaleSettings, {"merge": "maybe"}),
    (ScaleSettings, {"solver": "adam"}),
    (ScaleSettings, {"solver": "optax"}),  # renamed lbfgs
    (RefineSettings, {"solver": "adam"}),
    (ScaleSettings, {"intensity": "peak"}),
    (HuberLikelihood, {"k": 0}),
    (StudentTLikelihood, {"nu": "many"}),
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
    (GeneralSettings, {"devices": 0}),
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
    with pytest.raises(ValueError, match="Could not override 'scale.likelihood'"):
        compose("process", ["scale.likelihood=huber"])  # now the group `likelihood`
    s = process_settings(compose("process", ["likelihood=student_t", "likelihood.nu=3"]))
    assert s.likelihood == StudentTLikelihood(nu=3.0)
    with pytest.raises(ValueError, match=r"^scale.solver must be one of lm\|lbfgs, got 'optax'$"):
        process_settings(compose("process", ["scale.solver=optax"]))


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


def test_settings_coerce_and_normalise_in_one_place():
    """One generic __post_init__ (jfx.validate.Settings) converts every field; no settings
    class sets attributes itself."""
    r = RotationPartiality(mosaicity_deg="0.2", refine_mosaicity="no")
    assert r.mosaicity_deg == 0.2 and r.refine_mosaicity is False
    assert SummationIntegratorSettings(radii_px="4").radii_px == (4.0, 6.0, 8.0)
    assert ScaleSettings(wedge_start_deg=0.3).refine_wedge is True  # -w=v implies -w
    assert NoRefinement().free == () and not NoRefinement.enabled and RefineSettings.enabled
    jfx = Path(__file__).resolve().parents[1] / "jfx"
    settings_modules = [*jfx.glob("*/settings.py"), *jfx.glob("*/base.py"), jfx / "config.py",
                        jfx / "scale" / "partiality.py", jfx / "scale" / "likelihood.py",
                        jfx / "index" / "indexing.py", jfx / "index" / "fft.py",
                        jfx / "index" / "ffbidx.py"]
    users = [p.relative_to(jfx).as_posix() for p in settings_modules
             if "object.__setattr__" in p.read_text()
             or ("__post_init__" in p.read_text() and p.name != "config.py")]
    assert users == [], users  # config.py: only ProcessSettings' cross-stage checks


# ---------------------------------------------------------------- targets and search path
@pytest.mark.parametrize("override,needle", [
    ("spotfind._target_=os.getcwd", ("config node 'spotfind': _target_ 'os.getcwd' is not a "
                                     "jfx.spotfind.base.SpotFinderSettings")),
    ("partiality._target_=jfx.scale.likelihood.NormalLikelihood",
     "is not a jfx.scale.base.PartialityModel"),
    ("index._target_=jfx.index.indexing.IndexOptions", "is not a jfx.index.settings.IndexSettings"),
    ("likelihood._target_=no_such_module.Thing", "is not an importable class"),
])
def test_targets_must_implement_their_groups_interface(override, needle):
    with pytest.raises(ValueError, match=needle) as e:
        process_settings(compose("process", [override]))
    assert "\n" not in str(e.value)


def test_any_importable_subclass_is_a_valid_target(tmp_path, monkeypatch):
    """A class outside jfx is accepted when it implements the group's interface."""
    (tmp_path / "ext_likelihood.py").write_text(
        "import dataclasses\n"
        "from jfx.scale.likelihood import HuberLikelihood\n\n\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class WideHuber(HuberLikelihood):\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    s = process_settings(compose("process", ["likelihood=huber",
                                             "likelihood._target_=ext_likelihood.WideHuber",
                                             "likelihood.k=5"]))
    assert type(s.likelihood).__name__ == "WideHuber" and s.likelihood.k == 5.0


def _ext_dir(tmp_path: Path) -> Path:
    d = tmp_path / "my_conf"
    (d / "likelihood").mkdir(parents=True)
    (d / "likelihood" / "huber2.yaml").write_text(
        "defaults:\n  - huber2_schema\n  - _self_\n\n"
        "_target_: jfx.scale.likelihood.HuberLikelihood\nk: 2.0\n")
    (d / "likelihood" / "normal.yaml").write_text(  # a built-in name: the built-in wins
        "_target_: jfx.scale.likelihood.StudentTLikelihood\n")
    return d


def test_extra_config_dir_from_the_environment(tmp_path, monkeypatch):
    d = _ext_dir(tmp_path)
    monkeypatch.setenv("JFX_CONFIG_PATH", str(tmp_path / "absent_is_an_error"))
    with pytest.raises(ValueError, match="config directory not found"):
        config_dirs()
    monkeypatch.setenv("JFX_CONFIG_PATH", str(d))
    assert config_dirs() == [CONF, d.resolve()]
    assert group_options("likelihood") == ["huber", "huber2", "normal", "student_t"]
    cfg = compose("process", ["likelihood=huber2"])
    assert OmegaConf.to_container(cfg.likelihood) == {
        "_target_": "jfx.scale.likelihood.HuberLikelihood", "k": 2.0}  # schema: every field
    s = process_settings(compose("process", ["likelihood=huber2", "likelihood.k=1.5"]))
    assert s.likelihood == HuberLikelihood(k=1.5)
    assert type(process_settings(compose("process", [])).likelihood).__name__ == \
        "NormalLikelihood"


def test_extra_config_dir_argument(tmp_path, monkeypatch):
    monkeypatch.delenv("JFX_CONFIG_PATH", raising=False)
    d = _ext_dir(tmp_path)
    with pytest.raises(ValueError, match="Could not find 'likelihood/huber2'"):
        compose("scale", ["likelihood=huber2"])
    s = scale_settings(compose("scale", ["likelihood=huber2"], config_dirs_extra=[d]))
    assert s.likelihood == HuberLikelihood(k=2.0)
    assert "huber2" in group_options("likelihood", [d])


def test_every_config_group_is_installed_with_a_regular_install():
    """pyproject's data-files carry every conf/<group>/ (a non-editable install reads the
    config tree from <prefix>/share/jfx/conf)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"]
    groups = sorted(d.name for d in (root / "conf").iterdir() if d.is_dir())
    assert {k.removeprefix("share/jfx/conf/") for k in files if k != "share/jfx/conf"} \
        == set(groups)
    assert all(files[f"share/jfx/conf/{g}"] == [f"conf/{g}/*.yaml"] for g in groups)
