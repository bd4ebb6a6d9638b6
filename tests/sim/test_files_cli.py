"""Presets, truth file, jfx-simulate CLI and the Jungfraujoch file round trip."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from jfx.io.truth import Truth, read_truth, write_truth
from jfx.physics.diffraction import predict_rotation, predict_still
from jfx.sim import cli, presets, simulate
from jfx.sim import forward as fw


def test_presets_valid_and_overrides():
    for name in ("lyso_rotation", "lyso_serial", "anomalous_rotation", "monoclinic"):
        assert presets.validate(presets.get_preset(name)).name == name
    assert presets.get_preset("lyso_serial").kind == "still"
    assert presets.get_preset("anomalous_rotation").anomalous
    assert not presets.get_preset("monoclinic").write_cell
    p = presets.apply_overrides(presets.get_preset("lyso_rotation"),
                                ["n_images=3", "cell=70,70,30,90,90,90", "beam_center_px=none",
                                 "crop=100,120", "noise=false", "space_group=P 43 21 2"])
    assert p.n_images == 3 and p.cell == (70.0, 70.0, 30.0, 90.0, 90.0, 90.0)
    assert p.crop == (100, 120) and p.noise is False and p.space_group == "P 43 21 2"
    for bad in (["nonsense=1"], ["n_images=x"], ["cell=1,2"], ["kind=powder"], ["n_images"]):
        with pytest.raises(ValueError):
            presets.apply_overrides(presets.get_preset("lyso_rotation"), bad)


def test_truth_roundtrip_rotation(tmp_path, tiny_rotation):
    exp, obs = tiny_rotation
    t = Truth(**simulate.truth_content(exp, obs))
    path = write_truth(tmp_path / "x_truth.h5", t)
    r = read_truth(path)
    assert r.kind == "rotation" and r.n_images == exp.n_images and r.is_rotation
    np.testing.assert_array_equal(r.observations["h"], obs["hkl"][:, 0])
    np.testing.assert_allclose(r.observations["expected_photons"], obs["expected"])
    np.testing.assert_allclose(r.crystal["basis0"], exp.basis0)
    assert r.preset["n_images"] == exp.n_images and not bool(r.merged["anomalous"])
    # truth positions reproduce from the truth geometry + basis
    o = r.observations
    pr = fw.predict_rotation_all(exp.geometry, jnp.asarray(r.crystal["basis0"]),
                                 jnp.stack([o["h"], o["k"], o["l"]], -1))
    x = np.take_along_axis(np.asarray(pr["x"]), o["event"][:, None], 1)[:, 0]
    np.testing.assert_allclose(x, o["x"], atol=1e-6)
    # per-image basis = basis0 rotated to the image start
    om = np.deg2rad(r.geometry["start_deg"] + 2 * r.geometry["increment_deg"])
    c, s = np.cos(om), np.sin(om)
    R = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # axis (1, 0, 0)
    np.testing.assert_allclose(r.crystal["basis"][2], exp.basis0 @ R.T, atol=1e-10)
    # the observation sums per image
    np.testing.assert_allclose(r.images["expected_photons"].sum(), obs["expected"].sum())


def test_cli_bad_options_exit_2(capsys, tmp_path):
    for argv in (["--preset", "nope"], ["--bogus"], ["--set", "n_images=-1"],
                 ["--model", str(tmp_path / "missing.pdb")], ["--dtype", "float32"]):
        rc = cli.main(argv + ["-o", str(tmp_path / "x")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("jfx-simulate: error:") and "\n" not in err
    assert not list(tmp_path.iterdir())


def _writer_available():
    try:
        import jfx.io.jfjoch_writer  # noqa: F401
        import jfx.io.nxmx  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _writer_available(), reason="jfx.io.jfjoch_writer / nxmx not available")
@pytest.mark.parametrize(
    "kind,layout,dtype", [("rotation", "legacy", "int32"), ("still", "vds", "uint16")]
)
def test_file_roundtrip(tmp_path, capsys, kind, layout, dtype):
    from jfx.io.nxmx import open_master

    extra = ["--no-noise", "--set", "kind=still", "osc_deg=0", "bandwidth_fwhm=0.01",
             "mosaicity_deg=0.3", "blank_fraction=0.5"] if kind == "still" else []
    argv = ["--preset", "lyso_rotation", "-o", str(tmp_path / "sim"), "--n-images", "3",
            "--layout", layout, "--dtype", dtype, "--modules", "1", "--seed", "4", "-q",
            "--set", "d_min_A=4", "n_atoms=60", "n_heavy=2", "distance_mm=60"] + extra
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "sim_master.h5" in out and "sim_truth.h5" in out
    truth = read_truth(tmp_path / "sim_truth.h5")
    # the same simulation in process → identical integer frames
    args = cli.build_parser().parse_args(argv)
    exp = simulate.build_experiment(cli._preset_from_args(args))
    obs = simulate.plan_observations(exp)
    with open_master(tmp_path / "sim_master.h5") as m:
        assert m.n_images == 3 and m.image_shape == (514, 1030)
        assert m.unit_cell is not None and m.space_group == 96
        assert m.saturation_value == exp.saturation_value
        assert np.array_equal(m.pixel_mask, exp.layout.pixel_mask != 0)
        valid = exp.layout.pixel_mask == 0
        for i, fr in enumerate(simulate.iter_frames(exp, obs)):
            got = m.read_frame(i)
            np.testing.assert_array_equal(got, fr)
            assert np.all(got[~valid] == exp.error_value)
            if kind == "still":  # --no-noise: rounded expected counts
                e = np.minimum(np.rint(simulate.expected_frame(exp, obs, i)), exp.saturation_value)
                np.testing.assert_array_equal(got[valid], e[valid])
        geom = m.geometry
    assert (geom.goniometer is not None) == (kind == "rotation")
    # the simulator places spots at the sensor's mean absorption depth (parallax), as the
    # pipeline predicts them (integrate.parallax, default on)
    geom = dataclasses.replace(geom, detector=dataclasses.replace(geom.detector, parallax=True))
    o = truth.observations
    hkl = jnp.stack([o["h"], o["k"], o["l"]], -1)
    assert len(o["h"]) > 20
    if kind == "rotation":
        pr = predict_rotation(geom, jnp.asarray(truth.crystal["basis0"]), hkl)
        ev = o["event"][:, None]
        x = np.take_along_axis(np.asarray(pr["x"]), ev, 1)[:, 0]
        y = np.take_along_axis(np.asarray(pr["y"]), ev, 1)[:, 0]
    else:
        x, y = np.zeros(len(hkl)), np.zeros(len(hkl))
        for i in np.unique(o["image"]):
            sel = o["image"] == i
            pr = predict_still(geom, jnp.asarray(truth.crystal["basis"][i]), hkl[sel])
            x[sel], y[sel] = np.asarray(pr["x"]), np.asarray(pr["y"])
        blank = truth.images["is_blank"].astype(bool)
        assert blank.any() and not np.isin(np.flatnonzero(blank), o["image"]).any()
        assert np.all(np.isnan(truth.crystal["basis"][blank]))
    assert np.max(np.abs(x - o["x"])) < 0.01 and np.max(np.abs(y - o["y"])) < 0.01


@pytest.mark.skipif(not _writer_available(), reason="jfx.io.jfjoch_writer / nxmx not available")
def test_monoclinic_has_no_cell_in_file(tmp_path, capsys):
    from jfx.io.nxmx import open_master

    argv = ["--preset", "monoclinic", "-o", str(tmp_path / "mono"), "--n-images", "2",
            "--modules", "1", "--layout", "single", "--codec", "none", "-q",
            "--set", "d_min_A=5", "n_atoms=30"]
    assert cli.main(argv) == 0
    with open_master(tmp_path / "mono_master.h5") as m:
        assert m.unit_cell is None and m.space_group is None
        assert m.geometry.goniometer is not None
    t = read_truth(tmp_path / "mono_truth.h5")
    assert int(t.crystal["space_group"]) == 4
    np.testing.assert_allclose(t.crystal["cell"], (40, 55, 60, 90, 105, 90))
