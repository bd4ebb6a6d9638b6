"""Fault injection (issue 14): unusable output locations, SIGINT/SIGTERM mid-run, unreadable
references — each one line, its exit code, before the work where it can be found before it,
and nothing on disk lost. (Partial and incompatible references need a processed sweep:
tests/scale/test_pipeline_scale.py.)"""

from __future__ import annotations

import os
import signal

import gemmi
import numpy as np
import pytest

from jfx.cli import process_main, scale_main


def _one_error_line(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_unusable_output_location_is_found_before_work(tmp_path, shared_master, capsys,
                                                        monkeypatch):
    """``-o afile/run`` (a regular file where the directory should be) is one line, exit 2,
    before the master is opened — jfjoch_process and jfjoch_scale."""
    import jfx.io.nxmx as nxmx

    blocker = tmp_path / "afile"
    blocker.write_text("keep me")

    def no_reading(*a, **k):
        raise AssertionError("the master was opened")
    monkeypatch.setattr(nxmx, "open_master", no_reading)
    for main, first in ((process_main, str(shared_master[0])),
                        (scale_main, str(tmp_path / "in_process.h5"))):
        rc = main([first, "-o", str(blocker / "run")])
        err = capsys.readouterr().err
        assert rc == 2 and "it is a file, not a directory" in err
        _one_error_line(err)
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_read_only_output_directory_is_found_before_work(tmp_path, shared_master, capsys,
                                                         monkeypatch):
    import jfx.io.nxmx as nxmx

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.setattr(nxmx, "open_master", lambda *a, **k: pytest.fail("master opened"))
    try:
        rc = process_main([str(shared_master[0]), "-o", str(ro / "run")])
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write outputs to" in err and "Permission denied" in err
    _one_error_line(err)
    assert not list(ro.iterdir())


@pytest.mark.parametrize("sig,code,text", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                           (signal.SIGINT, 130, "interrupted")],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run(tmp_path, shared_master, capsys, monkeypatch, sig, code, text):
    """A real SIGTERM (what schedulers send) or SIGINT (Ctrl-C) during spot finding: one line,
    the exit code, no temporary file, the previous run's output untouched, the caller's
    handler restored."""
    import jfx.spotfind.find as find

    old = tmp_path / "o_process.h5"
    old.write_bytes(b"previous run")

    def deliver(*a, **k):
        os.kill(os.getpid(), sig)  # a real signal, delivered to the handler
        raise AssertionError(f"{sig!r} was not handled")
    monkeypatch.setattr(find.ThresholdSpotFinder, "__call__", deliver)
    before = signal.getsignal(signal.SIGTERM)
    rc = process_main([str(shared_master[0]), "-o", str(tmp_path / "o"), "-X", "None",
                       "-e", "2"])
    err = capsys.readouterr().err
    assert rc == code and text in err
    _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o_process.h5"]
    assert old.read_bytes() == b"previous run"
    assert signal.getsignal(signal.SIGTERM) is before


def _mtz_without_intensity(path):
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup(96)
    mtz.set_cell_for_all(gemmi.UnitCell(79.1, 79.1, 38.0, 90, 90, 90))
    mtz.add_dataset("d")
    mtz.add_column("FREE", "I")
    mtz.set_data(np.array([[1, 2, 3, 0]], np.float32))
    mtz.write_to_file(str(path))


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "no_intensity"])
def test_unreadable_reference_is_refused_before_any_image_is_read(tmp_path, shared_master,
                                                                  capsys, monkeypatch, kind):
    """``-z`` that is missing, not an MTZ, cut short or without an I/F column: one line, exit 2,
    no image read, nothing written (before: found only after integration, the work lost)."""
    from jfx.io.nxmx.master import MasterFile

    ref = tmp_path / "ref.mtz"
    if kind == "text":
        ref.write_text("this is not an MTZ\n")
    elif kind in ("truncated", "no_intensity"):
        _mtz_without_intensity(ref)
        if kind == "truncated":
            ref.write_bytes(ref.read_bytes()[:100])
    for name in ("iter_chunks", "read_frames", "read_frame"):
        monkeypatch.setattr(MasterFile, name, lambda *a, **k: pytest.fail("an image was read"))
    rc = process_main([str(shared_master[0]), "-o", str(tmp_path / "o"), "-R", "-M", "-S", "96",
                       "-z", str(ref)])
    err = capsys.readouterr().err
    assert rc == 2 and "ref.mtz" in err
    _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "missing" else ["ref.mtz"])
