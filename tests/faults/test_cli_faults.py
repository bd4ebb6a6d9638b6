"""Faults of the command line and of the progress output (issue 14): what a user sees on
``--help`` and usage errors (no JAX), optional-value options (``-R 0``), rotation data
without ``-R``, ``jfjoch_scale`` without ``-P``, ``--max-spots`` out of range, and the
console of a batch job (stdout/stderr to a file)."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jfx
from jfx.cli import _scale_partiality, process_main, scale_main
from jfx.io.progress import Progress
from tests.cli.conftest import make_master

REPO = Path(jfx.__file__).resolve().parents[1]


def _subprocess_env(**extra: str) -> dict[str, str]:
    """Environment that imports THIS checkout's jfx in a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _one_error_line(err: str, prog: str = "jfjoch_process") -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------ --help without JAX
STARTUP_CALLS = [
    ("process_main", ["--help"], 0),
    ("process_main", ["--version"], 0),
    ("process_main", [], 2),                                  # no input
    ("process_main", ["--bogus", "m.h5"], 2),                 # unknown option
    ("process_main", ["-R", "0", "m.h5"], 2),                 # detached optional value
    ("process_main", ["--max-spots", "100000000", "m.h5"], 2),  # out of range (settings)
    ("process_main", ["-X", "ffbidx", "m.h5"], 2),            # cross-stage rule (needs -C)
    ("process_main", ["-C", "10,10,10,90,90,90", "-S", "1000", "m.h5"], 2),  # bad -S
    ("process_main", ["missing.h5"], 2),                      # no such file
    ("scale_main", ["--help"], 0),
    ("scale_main", ["-P", "bogus", "x_process.h5"], 2),
]


def test_help_version_and_usage_errors_never_import_jax(tmp_path):
    """Every call answers without importing JAX (``--help`` took 2.5 s because the config
    tree imported the stage packages, which import JAX)."""
    script = (
        "import json, sys, jfx.cli\n"
        f"calls = {STARTUP_CALLS!r}\n"
        "out = []\n"
        "for fn, argv, _ in calls:\n"
        "    rc = getattr(jfx.cli, fn)(argv)\n"
        "    out.append([rc, 'jax' in sys.modules])\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=tmp_path, env=_subprocess_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for (fn, argv, rc), (rc_got, jax_loaded) in zip(STARTUP_CALLS, got):
        assert rc_got == rc, (fn, argv, r.stderr)
        assert not jax_loaded, (fn, argv)
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------ -R[=N] synopsis
def test_synopsis_shows_attached_optional_values(capsys):
    assert process_main(["--help"]) == 0
    usage = capsys.readouterr().out.split("\n\n")[0]
    usage = " ".join(usage.split())
    for shown in ("[-R[=N]]", "[--single-pass-rotation[=DEG]]", "[-w[=DEG]]"):
        assert shown in usage, usage
    for wrong in ("[-R N]", "[-w DEG]", "[--single-pass-rotation DEG]"):
        assert wrong not in usage
    assert scale_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "[-w[=DEG]]" in " ".join(out.split())
    # jfjoch_scale writes no _process.h5 and its help no longer says so
    assert "_process.h5 [general.output_prefix]" not in " ".join(out.split())


@pytest.mark.parametrize("argv,needle", [
    (["-R", "0"], "the value of -R must be attached: -R=0"),
    (["-R", "50"], "the value of -R must be attached: -R=50"),
    (["-w", "0.5"], "the value of -w must be attached: -w=0.5"),
    (["--single-pass-rotation", "5"], "--single-pass-rotation=5"),
    (["-R=0"], "two-pass rotation images (-R) must be >= 1, got 0"),
    (["-R0"], "two-pass rotation images (-R) must be >= 1, got 0"),
])
def test_detached_or_zero_rotation_value_is_one_clear_line(tmp_path, capsys, argv, needle):
    master, *_ = make_master(tmp_path)
    rc = process_main([str(master), *argv, "-o", str(tmp_path / "o")])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert needle in line
    assert not list(tmp_path.glob("o*"))


def test_bare_rotation_flag_before_the_master_still_works(tmp_path, capsys):
    """``-R master.h5``: the master (an existing file) is never taken as the value."""
    master, *_ = make_master(tmp_path)
    assert process_main(["-R", str(master), "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "two_pass_images: 30" in out


# ------------------------------------------------------------------ rotation without -R
def _until_pipeline(monkeypatch):
    """The pipeline stubbed to stop at once (as Ctrl-C): the run ends after the checks."""
    import jfx.pipeline

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(jfx.pipeline, "process", stop)


@pytest.mark.parametrize("rotation,argv,warned", [
    (True, [], True),             # rotation data processed as stills: one warning line
    (True, ["-R=3"], False),      # processed as a sweep
    (True, ["-X", "none"], False),  # nothing is indexed
    (False, [], False),           # stills
])
def test_rotation_data_without_r_is_announced(tmp_path, capsys, monkeypatch, rotation, argv,
                                              warned):
    master, *_ = make_master(tmp_path, rotation=rotation)
    _until_pipeline(monkeypatch)
    assert process_main([str(master), "-o", str(tmp_path / "o"), *argv]) == 130
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "rotation scan" in ln]
    if warned:
        assert lines == ["jfjoch_process: warning: the master file describes a rotation scan "
                         "(0.5 deg per image); processing the images as stills; use -R to "
                         "process it as a rotation sweep"]
    else:
        assert lines == []


# ------------------------------------------------------------------ jfjoch_scale without -P
def _recorded(*overrides: str) -> str:
    from jfx import config as jcfg

    return jcfg.to_yaml(jcfg.compose("process", list(overrides)))


def _scale_settings(*overrides: str):
    from jfx import config as jcfg

    return jcfg.scale_settings(jcfg.compose("scale", ["general.inputs=['a_process.h5']",
                                                      *overrides]))


def _run(rotation: bool):
    from jfx.scale.scaling import RunData

    return RunData(table={}, wavelength_A=1.0, phi_start_deg=0.0 if rotation else None,
                   phi_increment_deg=0.5 if rotation else None, beam_center_px=(10.0, 12.0),
                   bandwidth_fwhm=0.0)


@pytest.mark.parametrize("recorded,cli_p,native,rotation,model,note", [
    # the model of the jfjoch_process run is taken (rot on rotation data)
    ([("partiality=rot",)], None, [], True, "rot", "recorded in the input"),
    # recorded auto: resolved per data type, as jfjoch_process does
    ([()], None, [], True, "fixed", "fixed for rotation data"),
    ([()], None, [], False, "rot", "rot for stills"),
    # -P (or a partiality override) wins over the record
    ([("partiality=rot",)], "unity", [], True, "unity", "-P unity"),
    ([("partiality=rot",)], None, ["partiality=fixed"], True, "fixed", "-P fixed"),
    # inputs that disagree: the default -P auto
    ([("partiality=rot",), ("partiality=unity",)], None, [], True, "fixed", "default -P auto"),
])
def test_scale_partiality_is_the_recorded_one_and_is_announced(recorded, cli_p, native, rotation,
                                                               model, note):
    overrides = [f"partiality={cli_p}"] if cli_p else list(native)
    settings = _scale_settings(*overrides)
    ns = argparse.Namespace(partiality=cli_p)
    out, line = _scale_partiality(settings, ns, native, [_recorded(*r) for r in recorded],
                                  [_run(rotation)])
    assert line.startswith(f"partiality model: {model} (") and note in line, line
    used = out.partiality.bind(out.scale, bandwidth_fwhm=0.0, stills=not rotation)
    assert used.label == model


def test_recorded_partiality_keeps_its_values():
    from jfx import config as jcfg

    model, note = jcfg.recorded_partiality([_recorded("partiality=rot",
                                                      "partiality.mosaicity_deg=0.31")])
    assert type(model).__name__ == "RotationPartiality" and model.mosaicity_deg == 0.31
    assert jcfg.recorded_partiality(["general: {}\n"])[0] is None


# ------------------------------------------------------------------ --max-spots bound
def test_max_spots_is_bounded_for_the_user(tmp_path, capsys):
    from jfx.spotfind.settings import MAX_SPOTS_LIMIT, ThresholdSpotFinderSettings

    master, *_ = make_master(tmp_path)
    assert process_main([str(master), "--max-spots", "100000000", "-o", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"max spots (--max-spots) must be <= {MAX_SPOTS_LIMIT}, got 100000000" in line
    assert ThresholdSpotFinderSettings(max_spots=MAX_SPOTS_LIMIT).max_spots == MAX_SPOTS_LIMIT
    with pytest.raises(ValueError, match="max spots"):
        ThresholdSpotFinderSettings(max_spots=MAX_SPOTS_LIMIT + 1)


def test_uncapped_spot_list_for_3d_joining_bypasses_the_user_bound():
    """The rotation path keeps every filtered spot (its own uncapped selection), while the
    per-image lists hold at most --max-spots: 6 separated spots, --max-spots 2."""
    from jfx.models.geometry import Beam, Detector, Geometry
    from jfx.spotfind.settings import ThresholdSpotFinderSettings

    shape = (64, 64)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    centres = [(12.3, 14.6), (40.2, 11.7), (52.5, 33.1), (20.8, 48.4), (45.6, 52.2),
               (30.4, 30.9)]
    img = np.full(shape, 2.0)
    for k, (x, y) in enumerate(centres):
        img += (300.0 + 50 * k) / (2 * np.pi) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2)
    frames = np.rint(img).astype(np.int32)[None]
    geo = Geometry(beam=Beam.create(1.0), detector=Detector.create(60.0, (2.0, 2.0), shape))
    finder = ThresholdSpotFinderSettings(max_spots=2, high_resolution_A=None).create(
        geo, None, None, None)
    res = finder(frames, np.arange(1), all_spots=True)
    assert np.asarray(res.spots.valid).shape == (1, 2)
    assert int(np.asarray(res.spots.valid).sum()) == 2
    assert res.stats["n_spots_found"].tolist() == [len(centres)]
    assert res.all_spots.n == len(centres)
    got = sorted(zip(np.round(res.all_spots.x_px, 1), np.round(res.all_spots.y_px, 1)))
    want = sorted(centres)
    assert np.allclose(got, want, atol=0.1)
    # the kept two are the strongest (keep = strongest): the last two centres
    kept = {(round(float(x), 0), round(float(y), 0))
            for x, y in zip(res.spots.x_px[0], res.spots.y_px[0])}
    assert kept == {(round(x, 0), round(y, 0)) for x, y in centres[-2:]}


# ------------------------------------------------------------------ progress in a log file
class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _lines(total: int, step_s: float, **kw) -> list[str]:
    clock = _Clock()
    s = io.StringIO()  # not a terminal
    with Progress("spot finding", total, stream=s, unit="frames", clock=clock, **kw) as p:
        for _ in range(total):
            clock.t += step_s
            p.update(1)
    return s.getvalue().splitlines()


def test_progress_lines_when_not_a_terminal():
    # 1 s per frame, 50 frames: a line every 10 s (= 10 frames = 20 %), then the summary
    assert _lines(50, 1.0) == [
        "spot finding: 10/50 frames (20 %), 1.0 frames/s",
        "spot finding: 20/50 frames (40 %), 1.0 frames/s",
        "spot finding: 30/50 frames (60 %), 1.0 frames/s",
        "spot finding: 40/50 frames (80 %), 1.0 frames/s",
        "spot finding: 50 frames in 50.00 s (1.0 frames/s)",
    ]
    # slow stage (1000 frames at 1 s): 10 % takes 100 s, so a line every 30 s
    slow = _lines(1000, 1.0)
    assert slow[:3] == ["spot finding: 30/1000 frames (3 %), 1.0 frames/s",
                        "spot finding: 60/1000 frames (6 %), 1.0 frames/s",
                        "spot finding: 90/1000 frames (9 %), 1.0 frames/s"]
    assert len(slow) == 1000 // 30 + 1
    # a short stage: the summary only
    assert _lines(100, 0.01) == ["spot finding: 100 frames in 1.00 s (100.0 frames/s)"]
    assert "\r" not in "".join(_lines(50, 1.0))


def test_progress_redraws_in_place_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    s = Tty()
    clock = _Clock()
    with Progress("indexing", 3, stream=s, clock=clock, min_interval_s=0.0) as p:
        for _ in range(3):
            clock.t += 20.0
            p.update(1)
    out = s.getvalue()
    assert out.count("\r") == 3 and "3/3" in out
    assert "indexing: 1/3 images (33 %)" not in out  # no log lines on a terminal


@pytest.fixture(scope="module")
def sim_rotation(tmp_path_factory):
    """4 simulated lysozyme rotation frames (0.5 deg): indexable, integrable, scalable."""
    from jfx.sim.cli import main as simulate_main

    d = tmp_path_factory.mktemp("sim")
    assert simulate_main(["--preset", "lyso_rotation", "-o", str(d / "r"), "--n-images", "4",
                          "-q"]) == 0
    return d / "r_master.h5"


@pytest.mark.slow
def test_batch_job_log_has_every_stage_summary_in_order(sim_rotation, tmp_path):
    """``jfjoch_process … > log 2>&1``: each stage's lines are in the log before the final
    line, in stage order, with no terminal redraws; the rotation data processed without
    -R say so first."""
    from jfx.scale.settings import ScaleSettings

    log = tmp_path / "log.txt"
    exe = str(Path(sys.executable).with_name("jfjoch_process"))
    cmd = ([exe] if Path(exe).exists() else [sys.executable, "-m", "jfx.cli"])
    with open(log, "w") as fh:
        r = subprocess.run(cmd + [str(sim_rotation), "-o", str(tmp_path / "o"), "-M"],
                           stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path, timeout=600,
                           env=_subprocess_env(JFX_CACHE_DIR=str(tmp_path / "cache")))
    text = log.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and "Traceback" not in text
    lines = text.splitlines()

    def first(prefix: str) -> int:
        hits = [i for i, ln in enumerate(lines) if ln.startswith(prefix)]
        assert hits, (prefix, text)
        return hits[0]

    order = [first("jfjoch_process: warning: the master file describes a rotation scan"),
             first("spot finding + azimuthal integration: 4 frames in "),
             first("jfjoch_process: spot finding: "),
             first("indexing: 4 images in "),
             first("jfjoch_process: indexing ("),
             first("refinement: 2 steps in "),
             first("jfjoch_process: refinement (stills): "),
             first("integration: 4 frames in "),
             first("jfjoch_process: integration: "),
             first(f"scaling: {ScaleSettings().iterations} cycles in "),
             first("jfjoch_process: scaling: "),
             len(lines) - 1]
    assert order == sorted(order), text
    assert lines[-1].startswith("jfjoch_process: wrote ") and "_process.h5 (4 images)" in lines[-1]
    # jfjoch_scale in a fresh process on that output (it once failed there only: a module
    # first imported inside a jitted function leaked a tracer)
    scale_exe = str(Path(sys.executable).with_name("jfjoch_scale"))
    r = subprocess.run(([scale_exe] if Path(scale_exe).exists() else
                        [sys.executable, "-c", "import sys; from jfx.cli import scale_main; "
                         "sys.exit(scale_main())"])
                       + [str(tmp_path / "o_process.h5"), "-o", str(tmp_path / "s")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600,
                       env=_subprocess_env(JFX_CACHE_DIR=str(tmp_path / "cache")))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "s.mtz").exists()
