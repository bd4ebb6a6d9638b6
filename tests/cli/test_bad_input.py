"""Every bad input → exit 2, one line on stderr, no traceback, no output file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from jfx.cli import process_main, scale_main


def run_bad(capsys, tmp_path, argv, needle, main=process_main, prog="jfjoch_process"):
    out_dir = tmp_path / "out"
    rc = main([*argv, "-o", str(out_dir / "o")])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists() or not list(out_dir.iterdir())


@pytest.mark.parametrize("argv,needle", [
    (["-C", "79,79", "-X", "None"], "unit cell must be 6 numbers"),
    (["-C", "79,79,38,90,90,abc", "-X", "None"], "comma-separated numbers"),
    (["-C", "79,79,38,90,90,190"], "angles must be in (0, 180)"),
    (["-S", "999"], "space group must be a number 1-230"),
    (["-S", "x"], "space group must be a number 1-230"),
    (["-X", "foo"], "invalid choice: 'foo'"),
    (["-e", "1", "-s", "3"], "end image 1 is before start image 3"),
    (["--max-spots", "-1"], "max spots (--max-spots) must be >= 1"),
    (["--spot-min-pixels", "0"], "minimum spot size (--spot-min-pixels) must be >= 1"),
    (["--spot-keep", "nearest"], "--spot-keep"),
    (["--spot-low-resolution", "1.0"], "must be larger than the high-resolution limit"),
    (["--max-spots", "2.5"], "must be an integer"),
    (["--spot-sigma", "0"], "spot sigma (--spot-sigma) must be > 0"),
    (["--spot-threshold", "-1"], "must be >= 0"),
    (["-C", "79,80,38,90,90,90", "-S", "96"], "does not fit space group 96"),
    (["-X", "ffbidx"], "ffbidx requires a unit cell"),
    (["-r", "pixelrefine", "-X", "None"], "requires a reference MTZ"),
    (["-z", "/nonexistent/ref.mtz"], "reference MTZ not found"),
    (["-t", "0"], "stride must be >= 1"),
    (["-s", "-2"], "start_image must be >= 0"),
    (["-N", "0"], "threads must be >= 1"),
    (["--min-partiality", "1.5"], "must be <= 1"),
    (["--scaling-output", "pdf"], "must be one of mtz|cif|txt"),
    (["--integration-radius", "5,4,6"], "0 < r1 <= r2 < r3"),
    (["--force-rotation-lattice", "1,2,3"], "must be 9 comma-separated numbers"),
    (["--force-rotation-lattice", "1,0,0,2,0,0,0,0,1"], "zero volume"),
    (["-R=0"], "must be >= 1"),
    (["-P", "weird"], "invalid choice: 'weird'"),
    (["-r", "everything"], "invalid choice"),
    (["--bogus-option"], "unrecognized arguments: --bogus-option"),
    (["foo.bar=1"], "Could not override 'foo.bar'"),
    (["spotfind.sigmaa=3"], "Could not override 'spotfind.sigmaa'"),
    (["index=nope"], "Could not find 'index/nope'"),
    (["spotfind.sigma=abc"], "must be a number"),
    (["+spotfind.foo=1"], "unexpected keyword argument 'foo'"),
    (["spotfind._target_=os.getcwd"], "is not a jfx.spotfind.base.SpotFinderSettings"),
    (["partiality._target_=jfx.scale.likelihood.NormalLikelihood"],
     "is not a jfx.scale.base.PartialityModel"),
    (["--config-dir", "/nonexistent/conf"], "config directory not found"),
    (["scale.likelihood=huber"], "Could not override 'scale.likelihood'"),
    (["likelihood.k=2"], "Could not override 'likelihood.k'"),
    (["-P", "fixed", "-w"], "-w/--wedge (scale.refine_wedge) needs a partiality model with a per-image "
             "wedge (-P rot), not -P fixed"),
    (["-P", "unity", "scale.wedge_start_deg=0.2"], "needs a partiality model with a per-image"),
    (["-P", "fixed", "partiality.mosaicity_deg=0.2"], "Could not override"),
    (["-P", "rot", "partiality.mosaicity_deg=0"], "partiality.mosaicity_deg must be > 0"),
    (["-X", "ffbidx", "-C", "79,79,38,90,90,90", "index.fft.n_directions=10"],
     "Could not override 'index.fft.n_directions'"),
    (["a_master.h5", "b_master.h5"], "expected one master file"),
    (["azint.q_spacing_invA=-0.1"], "azint.q_spacing_invA must be > 0"),
    (["azint.q_spacing_invA=0"], "azint.q_spacing_invA must be > 0"),
    (["azint.low_q_invA=1", "azint.high_q_invA=0.5"], "must be larger than azint.low_q_invA"),
    (["azint.n_azimuthal_bins=-4"], "azint.n_azimuthal_bins must be >= 0"),
    (["azint.solid_angle=maybe"], "azint.solid_angle must be true or false"),
    (["general.batch_size=0"], "general.batch_size must be >= 1"),
    (["general.device=tpu"], "general.device must be one of auto|cpu|gpu"),
])
def test_bad_options(capsys, tmp_path, shared_master, argv, needle):
    # a real master, so only the option is wrong (nothing must be read or written)
    run_bad(capsys, tmp_path, [str(shared_master[0]), *argv] if "master.h5" not in " ".join(argv)
            else argv, needle)


def test_missing_file(capsys, tmp_path):
    run_bad(capsys, tmp_path, [str(tmp_path / "nope_master.h5"), "-X", "None"], "no such file")


def test_no_master_given(capsys, tmp_path):
    run_bad(capsys, tmp_path, ["-X", "None"], "no master file given")


def test_not_hdf5(capsys, tmp_path):
    p = tmp_path / "text_master.h5"
    p.write_text("hello\n")
    run_bad(capsys, tmp_path, [str(p), "-X", "None"], "not an HDF5 file")


def test_hdf5_but_not_nxmx(capsys, tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["foo"] = np.arange(3)
    run_bad(capsys, tmp_path, [str(p), "-X", "None"], "not an NXmx file")


def test_missing_data_file_behind_link(capsys, tmp_path, master_factory):
    master, *_ = master_factory(layout="legacy", n_images=5, images_per_file=2)
    data2 = master.parent / master.name.replace("_master.h5", "_data_000002.h5")
    assert data2.exists()
    data2.unlink()
    run_bad(capsys, tmp_path, [str(master), "-X", "None"], "data_000002")


def test_missing_vds_source(capsys, tmp_path, master_factory):
    master, *_ = master_factory(layout="vds", n_images=4, images_per_file=2)
    (master.parent / master.name.replace("_master.h5", "_data_000001.h5")).unlink()
    run_bad(capsys, tmp_path, [str(master), "-X", "None"], "data_000001")


def test_corrupt_chunk(capsys, tmp_path, master_factory):
    """A corrupt image alone: one line, exit 1 (in a longer run it is skipped with a
    warning: tests/faults/test_corrupt_data.py)."""
    master, *_ = master_factory(layout="single", n_images=4)
    with h5py.File(master, "r") as f:
        info = f["entry/data/data"].id.get_chunk_info(2)
    with open(master, "r+b") as fh:  # overwrite the compressed bytes of image 2
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    rc = process_main([str(master), "-X", "None", "-s", "2", "-e", "2",
                       "-o", str(tmp_path / "out" / "o")])
    err = capsys.readouterr().err
    assert rc == 1, err
    want = (f"jfjoch_process: error: the selected image is unreadable: corrupt or unreadable "
            f"data in image 2 (file {master}): corrupt compressed chunk: header says "
            f"{2**64 - 1} uncompressed bytes, the chunk holds {24 * 30 * 4}")
    assert err.strip().splitlines() == [want]


def test_unavailable_filter(capsys, tmp_path, shared_master, monkeypatch):
    real = h5py.h5z.filter_avail
    monkeypatch.setattr(h5py.h5z, "filter_avail",
                        lambda code: False if code == 32008 else real(code))
    run_bad(capsys, tmp_path, [str(shared_master[0]), "-X", "None"], "bitshuffle")


def test_inconsistent_shapes(capsys, tmp_path, master_factory):
    master, *_ = master_factory(layout="legacy", n_images=4, images_per_file=2)
    data2 = master.parent / master.name.replace("_master.h5", "_data_000002.h5")
    with h5py.File(data2, "r+") as f:
        del f["entry/data/data"]
        f["entry/data/data"] = np.zeros((2, 25, 30), dtype=np.int32)
    run_bad(capsys, tmp_path, [str(master), "-X", "None"], "shape")


def test_fully_masked_images(capsys, tmp_path):
    from jfx.io.jfjoch_writer import write_jungfraujoch
    from tests.cli.conftest import SHAPE, tiny_geometry

    mask = np.ones(SHAPE, dtype=np.uint32)
    master = write_jungfraujoch(tmp_path / "masked", np.zeros((2,) + SHAPE), n_images=2,
                                geometry=tiny_geometry(False), pixel_mask=mask)
    run_bad(capsys, tmp_path, [str(master), "-X", "None"], "fully masked")


# ----------------------------------------------------------------------------- jfjoch_scale
def test_scale_missing_and_bad_inputs(capsys, tmp_path, shared_master):
    run_bad(capsys, tmp_path, [str(tmp_path / "x_process.h5")], "no such file", scale_main,
            "jfjoch_scale")
    run_bad(capsys, tmp_path, ["-A"], "no _process.h5 input given", scale_main, "jfjoch_scale")
    not_h5 = tmp_path / "t_process.h5"
    not_h5.write_text("x")
    run_bad(capsys, tmp_path, [str(not_h5)], "not an HDF5 file", scale_main, "jfjoch_scale")
    run_bad(capsys, tmp_path, [str(shared_master[0])], "is not a jfx _process.h5 file", scale_main,
            "jfjoch_scale")
    run_bad(capsys, tmp_path, ["-P", "bad"], "invalid choice", scale_main, "jfjoch_scale")


def test_scale_without_or_with_incomplete_reflections(capsys, tmp_path, shared_master):
    master = shared_master[0]
    assert process_main([str(master), "-o", str(tmp_path / "p"), "-X", "None", "-e", "0"]) == 0
    capsys.readouterr()
    proc = tmp_path / "p_process.h5"
    run_bad(capsys, tmp_path, [str(proc)], "has no integrated reflections", scale_main,
            "jfjoch_scale")
    with h5py.File(proc, "r+") as f:
        g = f["entry"].create_group("reflections")
        for k in ("h", "k", "l"):
            g[k] = np.zeros(3, dtype=np.int32)
    run_bad(capsys, tmp_path, [str(proc), str(proc), "-A"],
            "/entry/reflections lacks image, d, lp", scale_main, "jfjoch_scale")


def test_gpu_requested_without_gpu(capsys, tmp_path, shared_master):
    import jax

    try:
        jax.devices("gpu")
        pytest.skip("a GPU is present")
    except RuntimeError:
        pass
    run_bad(capsys, tmp_path, [str(shared_master[0]), "-X", "None", "general.device=gpu"],
            "general.device=gpu but JAX finds no GPU")


def test_azint_q_range_beyond_detector(capsys, tmp_path, shared_master):
    run_bad(capsys, tmp_path, [str(shared_master[0]), "-X", "None", "azint.low_q_invA=50"],
            "no q range on the detector")


def test_profile_multiplier_without_pixelrefine_is_refused(tmp_path, capsys):
    """--profile-multiplier was parsed and read by nothing; it belongs to -r pixelrefine."""
    from jfx.cli import process_main

    rc = process_main([str(tmp_path / "m_master.h5"), "--profile-multiplier", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "applies to -r pixelrefine only" in err and err.count("\n") == 1


def test_physical_scale_model_for_stills_is_refused_before_work(capsys, tmp_path,
                                                                  master_factory):
    """scale_model=physical models rotation sweeps: on stills (and on a rotation master
    processed without -R, i.e. as stills) one line, exit 2, before any image is read."""
    still = master_factory(rotation=False, name="still")[0]
    run_bad(capsys, tmp_path, [str(still), "-M", "scale_model=physical"],
            "scale_model=physical models rotation sweeps")
    rot = master_factory(rotation=True, name="rot")[0]
    rc = process_main([str(rot), "-M", "scale_model=physical", "-o", str(tmp_path / "r" / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 2 and "use -R" in err[0]  # the one warning, then the error
    assert err[1].startswith("jfjoch_process: error: scale_model=physical models rotation")
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())
