"""Issue 14, writing outputs: a prefix's outputs are replaced together or not at all (disk
full, Ctrl-C, SIGTERM or a kill at any point), a full disk is one line and exit 1, files get
the normal umask mode, ``_process.h5`` documents itself (times, default plot, flag bits) and
rotation reflections carry observed positions and images inside the processed range."""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import jfx.cli
import jfx.pipeline
from jfx.cli import process_main, scale_main
from jfx.io.output_set import PROCESS_OUTPUTS, SCALE_OUTPUTS, output_set, recover
from jfx.models.reflections import ReflectionFlag
from tests.cli.conftest import make_master

REPO = Path(__file__).resolve().parents[2]


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def _snapshot(d: Path) -> dict[str, bytes]:
    """The visible files of ``d`` and their bytes."""
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())
            if p.is_file() and not p.name.startswith(".")}


def _hidden(d: Path) -> list[str]:
    """Temporary files and commit journals left in ``d``."""
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def rot_run(tmp_path_factory):
    """8 × 0.5° simulated lysozyme sweep (1 module, jfx-simulate), processed with -M on
    images 1..6 only; the pipeline result is kept so that later runs can skip the work."""
    from jfx.sim.cli import main as simulate_main

    d = tmp_path_factory.mktemp("rot")
    assert simulate_main(["--preset", "lyso_rotation", "-o", str(d / "r"), "--n-images", "8",
                          "--modules", "1", "-q"]) == 0
    argv = [str(d / "r_master.h5"), "-o", str(d / "p"), "-R=4", "-S", "96", "-s", "1",
            "-e", "6", "-M"]
    real, kept = jfx.pipeline.process, {}

    def spy(*a, **k):
        kept["result"] = real(*a, **k)
        return kept["result"]

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.setattr(jfx.pipeline, "process", spy)
        mp.setattr(jfx.cli, "enable_compilation_cache", lambda: None)
        assert process_main(argv) == 0
    return SimpleNamespace(dir=d, argv=argv, result=kept["result"], h5=d / "p_process.h5")


@pytest.fixture
def canned(rot_run, monkeypatch):
    """jfjoch_process without the work: the pipeline returns the fixture's result."""
    monkeypatch.setattr(jfx.pipeline, "process", lambda *a, **k: rot_run.result)
    monkeypatch.setattr(jfx.cli, "enable_compilation_cache", lambda: None)
    return rot_run


def _argv(run, prefix: Path) -> list[str]:
    a = list(run.argv)
    a[a.index("-o") + 1] = str(prefix)
    return a


def _enospc_on(monkeypatch, name_start: str) -> None:
    """os.write fails with ENOSPC for the temporary files whose name starts with
    ``name_start`` (``.<final name>.``): the disk fills up while that file is written."""
    real = os.write

    def write(fd, data):
        try:
            name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        except OSError:
            name = ""
        if name.startswith(name_start):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


# --------------------------------------------------------------------------- item 4
@pytest.mark.slow
def test_rotation_reflections_observed_and_inside_the_processed_images(rot_run):
    """Images 1..6 of a sweep: every reflection's ``image`` lies in 1..6 (those centred
    outside are PARTIAL and carry the nearest image they were recorded on), and indexed
    reflections carry observed_x/y (the indexed spots' centroid) that agree with the
    simulated truth."""
    from scipy.spatial import cKDTree

    with h5py.File(rot_run.h5) as f:
        r = {k: v[()] for k, v in f["entry/reflections"].items()}
        start = float(f["entry/MX/scan_start_deg"][()])
        inc = float(f["entry/MX/scan_increment_deg"][()])
    with h5py.File(rot_run.dir / "r_truth.h5") as f:
        tx, ty = f["observations/x"][()], f["observations/y"][()]
    image, first, last, flags = r["image"], r["image_first"], r["image_last"], r["flags"]
    assert image.min() >= 1 and image.max() <= 6
    assert np.all((first <= image) & (image <= last) & (first >= 1) & (last <= 6))
    centre = np.floor((r["predicted_phi"] - start) / inc)
    outside = (centre < 1) | (centre > 6)
    assert outside.sum() > 10  # the case is exercised
    assert np.all(flags[outside] & ReflectionFlag.PARTIAL)
    assert np.all(image[outside] == np.clip(centre[outside], first[outside], last[outside]))

    obs = np.isfinite(r["observed_x"])
    assert np.array_equal(obs, (flags & ReflectionFlag.OBSERVED) != 0)
    assert np.array_equal(obs, np.isfinite(r["observed_y"]))
    strong = (r["int_sum"] > 20 * np.sqrt(r["int_sum_var"])) & ~outside
    assert obs[strong].mean() > 0.8
    dist, _ = cKDTree(np.c_[tx, ty]).query(np.c_[r["observed_x"], r["observed_y"]][obs])
    assert np.median(dist) < 0.3 and np.mean(dist < 1.0) > 0.95


# --------------------------------------------------------------------------- item 3
@pytest.mark.slow
def test_process_h5_times_default_plot_and_flag_bits(rot_run):
    with h5py.File(rot_run.h5) as f:
        e = f["entry"]
        t0, t1 = (datetime.datetime.fromisoformat(e[k][()].decode())
                  for k in ("start_time", "end_time"))
        assert t0.tzinfo is not None and t1.tzinfo is not None and t0 <= t1
        assert f.attrs["default"] == "entry"
        plot = e[e.attrs["default"]]
        assert plot.attrs["NX_class"] == "NXdata"
        sig = plot[plot.attrs["signal"]][()]
        (axis,) = plot.attrs["axes"]
        np.testing.assert_array_equal(sig, e["MX/nPeaks"][()])
        np.testing.assert_array_equal(plot[axis][()], np.arange(1, 7))
        bits = e["reflections/flags"].attrs["bits"]
        for flag in ReflectionFlag:
            assert f"{int(flag).bit_length() - 1} {flag.name}: " in bits
    docs = (REPO / "docs" / "cli.md").read_text()
    for flag in ReflectionFlag:  # the file contract in docs/ names every bit too
        assert f"`{flag.name}`" in docs


# --------------------------------------------------------------------------- items 1, 2
@pytest.mark.slow
@pytest.mark.parametrize("target", ["_process.h5", ".mtz", "_iter2_scale.dat",
                                    "_scaling.html"])
def test_disk_full_is_one_line_and_keeps_the_earlier_set(canned, tmp_path, monkeypatch,
                                                          capsys, target):
    """ENOSPC while writing any output (the _process.h5, or between it and the .mtz …):
    one line, exit 1, no temporary file left, the earlier run's set untouched."""
    for p in canned.dir.glob("p[._]*"):  # an earlier run's complete set under prefix q
        shutil.copy(p, tmp_path / ("q" + p.name[1:]))
    before = _snapshot(tmp_path)
    assert {"q_process.h5", "q.mtz", "q_scaling.html", "q_iter1_scale.dat"} <= set(before)
    _enospc_on(monkeypatch, f".q{target}.")
    rc = process_main(_argv(canned, tmp_path / "q"))
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert rc == 1 and "Traceback" not in err and len(errors) == 1
    assert errors[0].startswith(
        f"jfjoch_process: error: no space left on device while writing {tmp_path}/q{target} (")
    assert re.search(r"\(\S+ [kMG]B to write, \S+ [kMG]B free\)$", errors[0])
    assert _snapshot(tmp_path) == before and _hidden(tmp_path) == []


@pytest.mark.slow
def test_earlier_outputs_a_run_does_not_write_are_removed(canned, tmp_path, capsys):
    """A prefix holds one run's outputs: the earlier run's .cif and extra _iterN_scale.dat
    go in the same commit (said with -v); files that are no output of the prefix stay."""
    for name in ("q.cif", "q_iter9_scale.dat", "q_notes.txt", "q2.mtz", "qq_process.h5"):
        (tmp_path / name).write_text("earlier")
    assert process_main(_argv(canned, tmp_path / "q") + ["-v"]) == 0
    err = capsys.readouterr().err
    names = sorted(p.name for p in tmp_path.iterdir())
    n_iter = len(canned.result.state.scaling.iterations)
    assert names == sorted(["q.mtz", "q_process.h5", "q_scaling.html", "q_notes.txt", "q2.mtz",
                            "qq_process.h5"]
                           + [f"q_iter{n}_scale.dat" for n in range(1, n_iter + 1)])
    line = next(ln for ln in err.splitlines() if "removed the earlier run's" in ln)
    assert "q.cif" in line and "q_iter9_scale.dat" in line
    assert stat.S_IMODE((tmp_path / "q.mtz").stat().st_mode) == 0o666 & ~_umask()


@pytest.mark.slow
def test_jfjoch_scale_replaces_its_own_set(rot_run, tmp_path, monkeypatch, capsys):
    """jfjoch_scale owns the scaling outputs of its prefix (never a _process.h5 there): disk
    full keeps its earlier set; a later run in another format replaces it."""
    monkeypatch.setattr(jfx.cli, "enable_compilation_cache", lambda: None)
    (tmp_path / "s_process.h5").write_text("not jfjoch_scale's")
    argv = [str(rot_run.h5), "-o", str(tmp_path / "s"), "-S", "96"]
    assert scale_main(argv + ["--scaling-output", "cif"]) == 0
    before = _snapshot(tmp_path)
    assert "s.cif" in before and "s_scaling.html" in before
    with monkeypatch.context() as mp:
        _enospc_on(mp, ".s_scaling.html.")
        assert scale_main(argv) == 1
    err = capsys.readouterr().err
    assert "jfjoch_scale: error: no space left on device while writing" in err
    assert _snapshot(tmp_path) == before and _hidden(tmp_path) == []
    assert scale_main(argv) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert "s.mtz" in names and "s.cif" not in names and "s_process.h5" in names


def _unshare_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt "
                        "2>/dev/null || mount -t tmpfs -o size=64k tmpfs /tmp"],
                       capture_output=True, timeout=30)
    return r.returncode == 0


def test_real_full_filesystem_is_one_line(tmp_path):
    """A real full disk (a 64 kB tmpfs in a user namespace; skipped where unprivileged user
    namespaces are off): jfjoch_process ends with one line and exit 1, no crash, and the
    earlier output on that disk is untouched."""
    if not _unshare_works():
        pytest.skip("no unprivileged user namespaces (unshare -rm) to mount a small tmpfs")
    master, *_ = make_master(tmp_path, n_images=40)
    out = tmp_path / "full"
    out.mkdir()
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        Path({str(out)!r}, "o_process.h5").write_bytes(b"earlier run")
        Path({str(out)!r}, "o.mtz").write_bytes(b"earlier mtz")
        Path({str(out)!r}, "ballast").write_bytes(bytes(40000))
        from jfx.cli import process_main
        sys.exit(process_main([{str(master)!r}, "-o", {str(out / "o")!r}, "-X", "none"]))
    """)
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$1" && '
         '"$2" -c "$3"; rc=$?; ls -a "$1"; cat "$1/o_process.h5" "$1/o.mtz"; exit $rc',
         "sh", str(out), sys.executable, script],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "JFX_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and errors[0].startswith(
        f"jfjoch_process: error: no space left on device while writing {out}/o_process.h5 (")
    listing = r.stdout.split()
    assert sorted(n for n in listing if n.startswith(".") and n not in (".", "..")) == []
    assert r.stdout.rstrip().endswith("earlier runearlier mtz")


# --------------------------------------------------------------------------- the commit
_OLD = {"k_process.h5": b"old h5", "k.mtz": b"old mtz", "k_scaling.html": b"old html",
        "k.cif": b"old cif"}
_NEW = {"k_process.h5": b"new h5", "k.mtz": b"new mtz", "k_scaling.html": b"new html"}


def _earlier(d: Path) -> None:
    for n, b in _OLD.items():
        (d / n).write_bytes(b)


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True, check=True)
    return int(p.stdout)  # that process has exited


def test_output_set_all_or_nothing(tmp_path):
    _earlier(tmp_path)
    (tmp_path / "k_notes.txt").write_bytes(b"mine")
    dead = _dead_pid()  # leftovers of a killed run: removed by the next set of the prefix
    for n in (f".k.cif.{dead}.ab12.tmp", f".k.{dead}.commit.tmp"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / f".k.mtz.{os.getpid()}.cd34.tmp").write_bytes(b"a live run's")
    with pytest.raises(RuntimeError), output_set(tmp_path / "k", PROCESS_OUTPUTS) as s:
        for n, b in list(_NEW.items())[:2]:
            s.add(tmp_path / n, b)
        raise RuntimeError("failure before the last output")
    assert _snapshot(tmp_path) == {**_OLD, "k_notes.txt": b"mine"}
    assert _hidden(tmp_path) == [f".k.mtz.{os.getpid()}.cd34.tmp"]
    (tmp_path / f".k.mtz.{os.getpid()}.cd34.tmp").unlink()
    with output_set(tmp_path / "k", PROCESS_OUTPUTS) as s:
        for n, b in _NEW.items():
            s.add(tmp_path / n, b)
    assert _snapshot(tmp_path) == {**_NEW, "k_notes.txt": b"mine"}  # k.cif: not this run's
    assert [p.name for p in s.removed] == ["k.cif"] and _hidden(tmp_path) == []
    # jfjoch_scale's set never removes the _process.h5 of its prefix
    with output_set(tmp_path / "k", SCALE_OUTPUTS) as s:
        s.add(tmp_path / "k.hkl", b"hkl")
    assert set(_snapshot(tmp_path)) == {"k_process.h5", "k.hkl", "k_notes.txt"}


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_during_the_commit_is_deferred(tmp_path, monkeypatch, sig):
    """Ctrl-C / SIGTERM arriving between the renames takes effect after the last one: the
    program stops (KeyboardInterrupt / the CLI's SIGTERM exception) with the new set whole."""
    class Terminated(Exception):
        pass

    def on_term(signum, frame):
        raise Terminated()

    _earlier(tmp_path)
    real, n = os.replace, []

    def replace(a, b):
        real(a, b)
        n.append(b)
        if len(n) == 2:  # the journal, then the first output: the signal arrives now
            os.kill(os.getpid(), getattr(signal, sig))

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt if sig == "SIGINT" else Terminated):
            with output_set(tmp_path / "k", PROCESS_OUTPUTS) as s:
                for name, b in _NEW.items():
                    s.add(tmp_path / name, b)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(n) == 1 + len(_NEW)
    assert _snapshot(tmp_path) == _NEW and _hidden(tmp_path) == []


_KILLED = """
import os, signal, sys
from pathlib import Path
from jfx.io.output_set import PROCESS_OUTPUTS, output_set
d = Path(sys.argv[1])
real, n = os.replace, []
def replace(a, b):
    real(a, b)
    n.append(b)
    if len(n) == 2:  # the journal, then the first output: killed here
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
with output_set(d / "k", PROCESS_OUTPUTS) as s:
    for name in ("k_process.h5", "k.mtz", "k_scaling.html"):
        s.add(d / name, b"new " + name.split(".")[-1].encode())
"""


def _killed_mid_commit(d: Path) -> None:
    _earlier(d)
    r = subprocess.run([sys.executable, "-c", _KILLED, str(d)], capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    files = _snapshot(d)
    assert files["k_process.h5"] == b"new h5" and files["k.mtz"] == b"old mtz"  # mixed now
    assert any(n.endswith(".commit") for n in _hidden(d))


def test_kill_during_the_commit_is_rolled_forward(tmp_path):
    """SIGKILL between two renames leaves a mixed set and the journal; the next write or
    read in that directory completes the set (with the removal of the earlier k.cif)."""
    _killed_mid_commit(tmp_path)
    from jfx.io.process_h5 import read_process_h5
    from jfx.io.errors import InputError

    with pytest.raises(InputError):  # "any open": reading completes the commit first
        read_process_h5(tmp_path / "k_process.h5")
    assert _snapshot(tmp_path) == _NEW and _hidden(tmp_path) == []


def test_kill_during_the_commit_with_a_lost_temporary(tmp_path):
    """If a pending temporary file was removed by hand, the roll-forward says so and leaves
    no file of the earlier run beside the new ones."""
    _killed_mid_commit(tmp_path)
    for p in tmp_path.glob(".k.mtz.*.tmp"):
        p.unlink()
    msgs = recover(tmp_path)
    assert len(msgs) == 1 and "lost" in msgs[0] and "k.mtz" in msgs[0]
    assert _snapshot(tmp_path) == {"k_process.h5": b"new h5", "k_scaling.html": b"new html"}
    assert _hidden(tmp_path) == []


# --------------------------------------------------------------------------- item 5
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_umask_mode(tmp_path, umask):
    """Files written through temporary files (master, data, _process.h5, merged, report)
    get the mode of a normal new file (0644 under umask 022), not mkstemp's 0600."""
    from jfx.io.merged import write_merged
    from jfx.io.process_h5 import write_process_groups
    from jfx.models.images import ImageStats
    from jfx.models.merged import MergedReflections

    old = os.umask(umask)
    try:
        master, frames, _, geo = make_master(tmp_path, n_images=4)
        n = frames.shape[0]
        stats = ImageStats(number=np.arange(n), max=frames.max((1, 2)),
                           mean=frames.mean((1, 2)).astype(np.float32),
                           n_masked=np.zeros(n, np.int64), n_saturated=np.zeros(n, np.int64))
        write_process_groups(tmp_path / "o_process.h5", master_path=master, geometry=geo,
                             config_yaml="", version="0", image=stats)
        one = np.ones(2)
        merged = MergedReflections(
            hkl=np.array([[1, 0, 0], [0, 0, 2]], np.int32), d_A=np.array([50.0, 25.0]),
            I=one, sigma=one, n_obs=np.ones(2, np.int64), centric=np.zeros(2, bool),
            cell=np.array([50.0, 50, 50, 90, 90, 90]), space_group=1)
        for fmt in ("mtz", "cif", "txt"):
            write_merged(tmp_path / "o", merged, fmt)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {"m_master.h5", "m_data_000001.h5", "o_process.h5", "o.mtz", "o.cif",
            "o.hkl"} <= {p.name for p in files}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


@pytest.mark.slow
def test_jfx_simulate_and_process_outputs_have_the_normal_mode(rot_run):
    mode = 0o666 & ~_umask()
    for name in ("r_master.h5", "r_data_000001.h5", "r_truth.h5", "p_process.h5", "p.mtz",
                 "p_scaling.html", "p_iter1_scale.dat"):
        assert stat.S_IMODE((rot_run.dir / name).stat().st_mode) == mode, name


def test_every_jfx_simulate_option_has_a_help_text(capsys):
    import argparse

    from jfx.sim.cli import build_parser, main

    p = build_parser()
    for a in p._actions:
        if a.option_strings:
            assert a.help and a.help != argparse.SUPPRESS and len(a.help) > 10, a.option_strings
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for a in p._actions:
        for flag in a.option_strings:
            assert flag in out
