"""Every documented jfjoch_process / jfjoch_scale option → resolved config value."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from jfx.cli import PROCESS_OPTIONS, SCALE_OPTIONS, process_main, scale_main


def resolved(capsys, argv, main=process_main):
    rc = main(["--cfg", "job", *argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return OmegaConf.create(out)


def get(cfg, key):
    v = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(v) if OmegaConf.is_config(v) else v


@pytest.fixture(scope="module")
def mtz(tmp_path_factory):
    p = tmp_path_factory.mktemp("ref") / "ref.mtz"
    p.write_bytes(b"MTZ placeholder")  # only existence is checked before scaling exists
    return str(p)


CELL = "79,79,38,90,90,90"
LAT = "1,0,0,0,2,0,0,0,3"
MTZ = "<mtz>"

# (argv, {config key: expected value})
CASES = [
    (["-o", "res/x"], {"general.output_prefix": "res/x"}),
    (["--output-prefix", "res/x"], {"general.output_prefix": "res/x"}),
    (["--output-prefix=res/x"], {"general.output_prefix": "res/x"}),
    (["-N", "4"], {"general.threads": 4}),
    (["--threads", "4"], {"general.threads": 4}),
    (["-s", "2"], {"general.start_image": 2}),
    (["--start-image", "2"], {"general.start_image": 2}),
    (["-e", "7"], {"general.end_image": 7}),
    (["--end-image=7"], {"general.end_image": 7}),
    (["-t", "3"], {"general.stride": 3}),
    (["--stride", "3"], {"general.stride": 3}),
    (["-v"], {"general.verbose": True}),
    (["--verbose"], {"general.verbose": True}),
    (["--spot-sigma", "4"], {"spotfind.sigma": 4}),
    (["--spot-threshold", "12.5"], {"spotfind.threshold": 12.5}),
    (["--spot-high-resolution", "2.0"], {"spotfind.high_resolution_A": 2.0}),
    (["--max-spots", "100"], {"spotfind.max_spots": 100}),
    (["--spot-low-resolution", "20"], {"spotfind.low_resolution_A": 20}),
    (["--spot-min-pixels", "3"], {"spotfind.min_pixels": 3}),
    (["--spot-keep", "stratified"], {"spotfind.keep": "stratified"}),
    (["--ignore-file-space-group"], {"crystal.ignore_file_space_group": True}),
    (["-X", "FFBIDX", "-C", CELL], {"index._target_": "jfx.index.settings.FFBIdxIndexing"}),
    (["-X", "FFT"], {"index._target_": "jfx.index.settings.FFTIndexing"}),
    (["--indexing-algorithm", "Fftw"], {"index._target_": "jfx.index.settings.FFTWIndexing"}),
    (["-X", "Auto"], {"index._target_": "jfx.index.settings.AutoIndexing"}),
    (["-X", "None"], {"index._target_": "jfx.index.settings.NoIndexing"}),
    (["--indexing-algorithm=none"], {"index._target_": "jfx.index.settings.NoIndexing"}),
    (["-C", CELL], {"crystal.unit_cell": [79, 79, 38, 90, 90, 90]}),
    (["--unit-cell", "79.5,79.5,38.1,90,90,90"],
     {"crystal.unit_cell": [79.5, 79.5, 38.1, 90, 90, 90]}),
    (["-S", "96"], {"crystal.space_group": 96}),
    (["--space-group", "96"], {"crystal.space_group": 96}),
    (["-r", "orientation"],
     {"refine._target_": "jfx.refine.settings.OrientationRefinement",
      "refine.free": ["lattice.orientation"]}),
    (["--refine", "none"], {"refine._target_": "jfx.refine.settings.NoRefinement",
                            "refine.free": []}),
    (["-r", "BEAM_AND_LATTICE"],
     {"refine._target_": "jfx.refine.settings.BeamAndLatticeRefinement"}),
    (["-r", "pixelrefine", "-z", MTZ], {"refine._target_": "jfx.refine.settings.PixelRefinement"}),
    (["-R"], {"rotation.two_pass_images": 30}),
    (["-R", "input_master.h5"],
     {"rotation.two_pass_images": 30, "general.input": "input_master.h5"}),
    (["-R=50"], {"rotation.two_pass_images": 50}),
    (["-R50"], {"rotation.two_pass_images": 50}),
    (["--two-pass-rotation"], {"rotation.two_pass_images": 30}),
    (["--two-pass-rotation=12"], {"rotation.two_pass_images": 12}),
    (["--single-pass-rotation"], {"rotation.single_pass_deg": 10.0}),
    (["--single-pass-rotation=5"], {"rotation.single_pass_deg": 5}),
    (["--redo-rotation-spots"], {"rotation.redo_spots": True}),
    (["--force-rotation-lattice", LAT], {"rotation.force_lattice": [1, 0, 0, 0, 2, 0, 0, 0, 3]}),
    (["-M"], {"scale.merge": True}),
    (["--scale-merge"], {"scale.merge": True}),
    (["-P", "rot"], {"partiality._target_": "jfx.scale.partiality.RotationPartiality",
                     "partiality.mosaicity_deg": 0.1, "partiality.refine_mosaicity": True}),
    (["--partiality", "unity"], {"partiality._target_": "jfx.scale.partiality.UnityPartiality"}),
    (["-P", "Fixed"], {"partiality._target_": "jfx.scale.partiality.FixedPartiality"}),
    (["-A"], {"scale.anomalous": True}),
    (["--anomalous"], {"scale.anomalous": True}),
    (["-B"], {"scale.refine_bfactor": True}),
    (["--refine-bfactor"], {"scale.refine_bfactor": True}),
    (["-w", "-P", "rot"], {"scale.refine_wedge": True, "scale.wedge_start_deg": None}),
    (["-w=0.3", "-P", "rot"], {"scale.refine_wedge": True, "scale.wedge_start_deg": 0.3}),
    (["--wedge", "-P", "rot"], {"scale.refine_wedge": True, "scale.wedge_start_deg": None}),
    (["--wedge=0.3", "-P", "rot"], {"scale.refine_wedge": True, "scale.wedge_start_deg": 0.3}),
    (["--scaling-high-resolution", "1.8"], {"scale.high_resolution_A": 1.8}),
    (["--min-partiality", "0.1"], {"scale.min_partiality": 0.1}),
    (["--include-overloads"], {"scale.include_overloads": True}),
    (["--reject-outliers", "5"], {"scale.reject_outliers": 5}),
    (["--reject-delta-cchalf", "3"], {"scale.reject_delta_cchalf": 3}),
    (["--min-image-cc", "50"], {"scale.min_image_cc_percent": 50}),
    (["--scaling-iterations", "5"], {"scale.iterations": 5}),
    (["--scaling-output", "cif"], {"scale.output_format": "cif"}),
    (["--scaling-output", "txt"], {"scale.output_format": "txt"}),
    (["-z", MTZ], {"scale.reference_mtz": MTZ}),
    (["--reference-mtz", MTZ], {"scale.reference_mtz": MTZ}),
    (["--bandwidth", "0.01"], {"pixelrefine.bandwidth_fwhm": 0.01}),
    (["--integration-radius", "4"], {"integrate.radii_px": [4.0, 6.0, 8.0]}),
    (["--integration-radius", "2,4,6"], {"integrate.radii_px": [2, 4, 6]}),
    (["--profile-multiplier", "3", "-r", "pixelrefine", "-z", MTZ],
     {"pixelrefine.profile_multiplier": 3}),  # refused without -r pixelrefine
    (["spotfind.sigma=5", "scale.iterations=7"], {"spotfind.sigma": 5, "scale.iterations": 7}),
    (["--spot-sigma", "4", "spotfind.sigma=6"], {"spotfind.sigma": 6}),  # native overrides win
    (["index=fft", "partiality=rot"],
     {"index._target_": "jfx.index.settings.FFTIndexing",
      "partiality._target_": "jfx.scale.partiality.RotationPartiality"}),
    (["likelihood=huber", "likelihood.k=2"],
     {"likelihood._target_": "jfx.scale.likelihood.HuberLikelihood", "likelihood.k": 2}),
]


@pytest.mark.parametrize("argv,expected", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_option_translation(capsys, mtz, argv, expected):
    argv = [mtz if a == MTZ else a for a in argv]
    cfg = resolved(capsys, argv)
    for key, value in expected.items():
        value = mtz if value == MTZ else value
        assert get(cfg, key) == value, key


def test_every_documented_option_has_a_case():
    used = {a.split("=")[0] for argv, _ in CASES for a in argv if a.startswith("-")}
    used |= {"-R", "-w"}  # the -R50 / -w=0.3 forms
    for flags, *_ in PROCESS_OPTIONS:
        for f in flags:
            assert f in used, f


DEFAULTS = {
    "general.output_prefix": "output", "general.threads": 1, "general.start_image": 0,
    "general.end_image": None, "general.stride": 1, "general.verbose": False,
    "general.input": None, "general.batch_size": None, "general.device": "auto",
    "general.devices": None,
    "azint.enabled": True, "azint.q_spacing_invA": 0.02, "azint.low_q_invA": 0.0,
    "azint.high_q_invA": None, "azint.n_azimuthal_bins": 0, "azint.solid_angle": True,
    "azint.polarization": True,
    "spotfind.sigma": 3.0, "spotfind.threshold": 10.0, "spotfind.high_resolution_A": 1.5,
    "spotfind.low_resolution_A": None, "spotfind.max_spots": 250,
    "spotfind.keep": "strongest", "spotfind.min_pixels": 2, "spotfind.max_separation_px": 2.0,
    "spotfind.max_background_step": 1.0, "spotfind.beam_guard": True,
    "crystal.ignore_file_space_group": False, "index.min_cell_A": 5.0,
    "index._target_": "jfx.index.settings.AutoIndexing", "crystal.unit_cell": None,
    "crystal.space_group": None, "index.max_lattices": 1, "index.fft.n_directions": 4096,
    "index.ffbidx.n_candidates": 32,
    "refine._target_": "jfx.refine.settings.BeamAndLatticeRefinement",
    "refine.free": ["detector.beam_center_px", "detector.distance_mm", "lattice.orientation",
                    "lattice.cell"], "refine.solver": "lm", "refine.scan_varying_deg": None,
    "integrate.radii_px": [3.0, 5.0, 7.0], "integrate.enabled": True,
    "partiality._target_": "jfx.scale.partiality.AutoPartiality",
    "likelihood._target_": "jfx.scale.likelihood.NormalLikelihood",
    "rotation.two_pass_images": None, "rotation.single_pass_deg": None,
    "rotation.redo_spots": False, "rotation.force_lattice": None,
    "scale.merge": False, "scale.anomalous": False, "scale.refine_bfactor": False,
    "scale.refine_wedge": False, "scale.wedge_start_deg": None, "scale.high_resolution_A": None,
    "scale.min_partiality": 0.02, "scale.reject_outliers": None,
    "scale.reject_delta_cchalf": None, "scale.min_image_cc_percent": None,
    "scale.iterations": 3, "scale.output_format": "mtz", "scale.reference_mtz": None,
    "pixelrefine.bandwidth_fwhm": None, "pixelrefine.profile_multiplier": 6.0,
}


def test_cfg_job_shows_every_default(capsys):
    cfg = resolved(capsys, [])
    for key, value in DEFAULTS.items():
        assert get(cfg, key) == value, key


def test_cfg_job_shows_pipeline_overrides(capsys):
    cfg = resolved(capsys, ["general.batch_size=8", "general.device=CPU",
                            "azint.q_spacing_invA=0.05", "azint.n_azimuthal_bins=12"])
    assert get(cfg, "general.batch_size") == 8 and get(cfg, "general.device") == "CPU"
    assert get(cfg, "azint.q_spacing_invA") == 0.05 and get(cfg, "azint.n_azimuthal_bins") == 12


def test_help_lists_every_option_with_default(capsys):
    assert process_main(["--help"]) == 0
    out = capsys.readouterr().out
    for flags, _dest, key, *_ in PROCESS_OPTIONS:
        for f in flags:
            assert f in out, f
        assert f"[{key}]" in out
    flat = " ".join(out.split())  # argparse wraps at the terminal width
    for default in ("(default: 3.0)", "(default: 250)", "(default: beam_and_lattice)",
                    "[partiality] (default: auto)", "[index] (default: auto)",
                    "geometry refinement: beam_and_lattice | none | orientation | pixelrefine"):
        assert default in flat
    assert "-R[=N], --two-pass-rotation[=N]" in out
    assert "--cfg" in out


def test_no_arguments_prints_usage_and_exits_2(capsys):
    assert process_main([]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("usage: jfjoch_process")
    assert captured.out == ""


SCALE_CASES = [
    (["-o", "sc"], {"general.output_prefix": "sc"}),
    (["-S", "96"], {"crystal.space_group": 96}),
    (["-P", "ROT"], {"partiality._target_": "jfx.scale.partiality.RotationPartiality"}),
    (["-A", "-B", "-w=0.2", "-P", "rot"], {"scale.anomalous": True, "scale.refine_bfactor": True,
                              "scale.wedge_start_deg": 0.2, "scale.refine_wedge": True}),
    (["--scaling-high-resolution", "2", "--min-partiality", "0.5", "--reject-outliers", "4",
      "--reject-delta-cchalf", "2", "--min-image-cc", "30", "--scaling-iterations", "2",
      "--scaling-output", "txt"],
     {"scale.high_resolution_A": 2, "scale.min_partiality": 0.5, "scale.reject_outliers": 4,
      "scale.reject_delta_cchalf": 2, "scale.min_image_cc_percent": 30, "scale.iterations": 2,
      "scale.output_format": "txt"}),
    (["a_process.h5", "b_process.h5", "scale.iterations=4"],
     {"general.inputs": ["a_process.h5", "b_process.h5"], "scale.iterations": 4}),
]


@pytest.mark.parametrize("argv,expected", SCALE_CASES, ids=[" ".join(c[0]) for c in SCALE_CASES])
def test_scale_option_translation(capsys, argv, expected):
    cfg = resolved(capsys, argv, main=scale_main)
    for key, value in expected.items():
        assert get(cfg, key) == value, key


def test_scale_help_lists_its_options(capsys):
    assert scale_main(["--help"]) == 0
    out = capsys.readouterr().out
    for flags, *_ in SCALE_OPTIONS:
        for f in flags:
            assert f in out
    assert "--spot-sigma" not in out
    assert scale_main([]) == 2


def test_docs_cli_lists_every_option_and_key():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for flags, _dest, key, *_ in PROCESS_OPTIONS:
        for f in flags:
            assert f"`{f}" in text, f
        assert f"`{key}" in text or key.split(".")[0] in text, key


def test_odd_paths_are_quoted(capsys):
    path = "dir with space/we,ird'name=x_master.h5"
    cfg = resolved(capsys, [path, "-o", "out dir/p,q"])
    assert get(cfg, "general.input") == path
    assert get(cfg, "general.output_prefix") == "out dir/p,q"
