"""jfjoch_process -M and jfjoch_scale end to end on simulated Jungfraujoch files."""

from __future__ import annotations

from pathlib import Path

import gemmi
import h5py
import numpy as np
import pytest

from jfx.cli import process_main, scale_main
from jfx.sim.cli import main as simulate_main


def _truth_merged(path):
    with h5py.File(path) as f:
        g = f["merged"]
        hkl = np.stack([g["h"][()], g["k"][()], g["l"][()]], 1)
        return ({tuple(h): v for h, v in zip(hkl, g["i_true"][()])},
                {tuple(h): (p, m) for h, p, m in zip(hkl, g["i_plus"][()], g["i_minus"][()])},
                f["images/scale_factor"][()], float(f["crystal/mosaicity_deg"][()]))


def _mtz(path, col="IMEAN"):
    m = gemmi.read_mtz_file(str(path))
    return (np.asarray(m.make_miller_array()), np.asarray(m.column_with_label(col).array),
            np.asarray(m.make_d_array()), m)


def test_rotation_merge_against_truth(rot, merged_run):
    out, stdout = merged_run
    hkl, I, d, m = _mtz(f"{out}.mtz")
    assert m.spacegroup.number == 96
    np.testing.assert_allclose(m.cell.parameters[:3], (79.1, 79.1, 38.0), rtol=0.005)
    truth, _, g_true, mos_true = _truth_merged(rot / "r_truth.h5")
    t = np.array([truth.get(tuple(h), np.nan) for h in hkl])
    ok = np.isfinite(t) & (d >= 2.0)  # the simulated structure stops at 2 Å
    assert ok.sum() > 500
    assert np.corrcoef(I[ok], t[ok])[0, 1] >= 0.99
    with h5py.File(f"{out}_process.h5") as f:
        s = {k: f["entry/scaling"][k][()] for k in ("scale", "image", "mosaicity_deg",
                                                     "rejected", "cc", "statistics")}
        em = dict(f["entry/scaling/error_model"].attrs)
    inside = (s["image"] >= 1) & (s["image"] <= 14)  # sweep ends have few full reflections
    lg, lt = np.log(s["scale"][inside]), np.log(g_true[s["image"][inside]])
    # the simulated scale jumps independently from frame to frame, and a summed reflection
    # spans ~2-3 frames while the model gives it its centroid frame's scale: correlated,
    # not exact
    assert np.corrcoef(lg, lt)[0, 1] > 0.8
    assert abs(s["mosaicity_deg"][0] - mos_true) < 0.3 * mos_true
    assert 0.5 < em["a"] < 2.0 and 0 <= em["b"] < 0.2
    st = s["statistics"]
    assert st.dtype.names[:4] == ("d_max", "d_min", "n_obs", "n_unique")
    assert st["n_unique"][-1] == len(hkl)
    # the console table and the other outputs
    assert "overall" in stdout and "CC1/2" in stdout
    for n in (1, 2, 3):
        lines = open(f"{out}_iter{n}_scale.dat").read().split("\n")
        assert len([ln for ln in lines if ln and not ln.startswith("#")]) == len(s["image"])
    html = open(f"{out}_scaling.html").read()
    # three plots against resolution, scale, B and CC per image (B only when a B is refined:
    # the default rotation scale model, physical, refines B(φ))
    assert html.count("<svg") == 6 and "P 43 21 2 (96)" in html and "r_master.h5" in html


def test_identical_runs_give_identical_results(rot, merged_run, tmp_path):
    """Issue 14: the same command twice gives the same merged intensities and the same
    _process.h5 content, bit for bit (only the output prefix in the stored config and the
    run's start/end times differ) — also with two reader processes and another batch size
    (the rotation profile reference was built per batch: up to 0.19 σ apart before)."""
    import hdf5plugin  # noqa: F401

    out, _ = merged_run
    again = tmp_path / "again"
    assert process_main([str(rot / "r_master.h5"), "-o", str(again), "-R=10", "-S", "96",
                         "-M", "-P", "rot", "-N", "2", "general.batch_size=3"]) == 0
    a = gemmi.read_mtz_file(f"{out}.mtz")
    b = gemmi.read_mtz_file(f"{again}.mtz")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert open(f"{out}_iter3_scale.dat").read() == open(f"{again}_iter3_scale.dat").read()
    differ, n = [], 0
    with h5py.File(f"{out}_process.h5") as fa, h5py.File(f"{again}_process.h5") as fb:
        def compare(name, obj):
            nonlocal n
            if not isinstance(obj, h5py.Dataset) or name.endswith(("config", "_time")):
                return
            n += 1
            x, y = obj[()], fb[name][()]
            if isinstance(x, np.ndarray) and x.dtype.names:
                same = x.tobytes() == y.tobytes()
            elif isinstance(x, np.ndarray) and x.dtype.kind == "f":
                same = np.array_equal(x, y, equal_nan=True)
            else:
                same = np.array_equal(x, y)
            if not same:
                differ.append(name)
        fa.visititems(compare)
    assert n > 50 and differ == []


def test_jfjoch_scale_remerges_and_combines_half_runs(rot, merged_run, tmp_path, capsys):
    """jfjoch_scale on the full run equals the process run's merge; two half runs
    (images 0-7, 8-15) scaled together equal one full run (same reflections, CC > 0.995)."""
    out, _ = merged_run
    full = tmp_path / "full"
    assert scale_main([f"{out}_process.h5", "-o", str(full), "-P", "rot"]) == 0
    h0, i0, _, _ = _mtz(f"{out}.mtz")
    h1, i1, _, _ = _mtz(f"{full}.mtz")
    np.testing.assert_array_equal(h0, h1)
    np.testing.assert_allclose(i1, i0, rtol=1e-4, atol=1e-4 * np.nanmax(i0))
    halves = []
    for a, b in ((0, 7), (8, 15)):
        o = tmp_path / f"h{a}"
        assert process_main([str(rot / "r_master.h5"), "-o", str(o), "-R=8", "-S", "96",
                             "-s", str(a), "-e", str(b)]) == 0
        halves.append(f"{o}_process.h5")
    both = tmp_path / "both"
    assert scale_main(halves + ["-o", str(both), "-P", "rot"]) == 0
    err = capsys.readouterr().err
    assert "scaling:" in err
    h2, i2, _, _ = _mtz(f"{both}.mtz")
    common = {tuple(h): v for h, v in zip(h2, i2)}
    pairs = np.array([(v, common[tuple(h)]) for h, v in zip(h1, i1) if tuple(h) in common])
    assert len(pairs) > 0.95 * len(h1)
    # reflections crossing the split are partial in both halves (each scaled by its own
    # recorded fraction) but fully summed in the full run: equal within the noise
    assert np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1] > 0.995
    with open(f"{both}_iter1_scale.dat") as f:
        assert len([ln for ln in f.read().split("\n") if ln and not ln.startswith("#")]) >= 16


def test_jfjoch_scale_remerges_in_another_space_group(merged_run, tmp_path):
    """-S 89 (P422, same lattice, no screw axes): the 00l reflections that P4₃2₁2 calls
    absent are merged too, everything else maps to the same unique set (same partiality
    model as the run: -P rot)."""
    out, _ = merged_run
    o = tmp_path / "p422"
    assert scale_main([f"{out}_process.h5", "-o", str(o), "-S", "89", "-P", "rot"]) == 0
    h96, _, _, _ = _mtz(f"{out}.mtz")
    h89, _, _, m = _mtz(f"{o}.mtz")
    assert m.spacegroup.number == 89
    ops = gemmi.SpaceGroup(96).operations()
    extra = [h for h in map(tuple, h89) if ops.is_systematically_absent(list(map(int, h)))]
    assert len(h89) == len(h96) + len(extra)
    assert all(h[0] == 0 and h[1] == 0 or h[0] == 0 or h[1] == 0 for h in extra)


@pytest.mark.parametrize("fmt,ext", [("cif", "cif"), ("txt", "hkl"), ("mtz", "mtz")])
def test_other_output_formats_with_anomalous(merged_run, tmp_path, capsys, fmt, ext):
    out, stdout = merged_run
    o = tmp_path / "x"
    capsys.readouterr()
    assert scale_main([f"{out}_process.h5", "-o", str(o), "-A", "--scaling-output", fmt]) == 0
    table = capsys.readouterr().out
    # the anomalous statistics only with -A: a second table under the main one, the
    # anomalous plot and columns in the report
    assert "Anomalous statistics" in table and "AnoCmp%" in table and "<|dI|/s(dI)>" in table
    assert "Anomalous statistics" not in stdout and "CCano" not in stdout
    overall = next(ln.split() for ln in table[table.index("Anomalous statistics"):].splitlines()
                   if ln.strip().startswith("overall"))
    assert int(overall[1]) > 100 and 0 < float(overall[2]) <= 100  # pairs, completeness %
    html = Path(f"{o}_scaling.html").read_text(encoding="utf-8")
    assert "Anomalous signal" in html and "<th>anom_completeness (%)</th>" in html
    if fmt == "mtz":
        m = gemmi.read_mtz_file(f"{o}.mtz")
        labels = [c.label for c in m.columns]
        assert labels[-6:] == ["I(+)", "SIGI(+)", "I(-)", "SIGI(-)", "N(+)", "N(-)"]
        n_p = np.asarray(m.column_with_label("N(+)").array)
        n_m = np.asarray(m.column_with_label("N(-)").array)
        n = np.asarray(m.column_with_label("N_obs").array)
        cen = np.asarray(m.spacegroup.operations().centric_flag_array(m.make_miller_array()))
        np.testing.assert_array_equal(n_p[~cen] + n_m[~cen], n[~cen])
        np.testing.assert_array_equal(n_m[cen], n[cen])
        assert int(overall[1]) == int(np.sum(~cen & (n_p > 0) & (n_m > 0)))
        return
    text = open(f"{o}.{ext}").read()
    if fmt == "cif":
        doc = gemmi.cif.read_string(text)
        rb = gemmi.as_refln_blocks(doc)[0]
        assert rb.spacegroup.number == 96
        assert "pdbx_I_plus" in text and len(rb.make_miller_array()) > 500
    else:
        rows = [ln.split() for ln in text.splitlines() if ln and not ln.startswith("#")]
        assert len(rows) > 500 and all(len(r) == 6 for r in rows[:50])
        assert "96" in text.splitlines()[0] + text.splitlines()[1] + text.splitlines()[2]


def test_reference_mtz_drives_the_scaling(rot, merged_run, tmp_path, capsys):
    out, _ = merged_run
    # a reference made from the truth (I = |F|², P 43 21 2)
    truth, _, _, _ = _truth_merged(rot / "r_truth.h5")
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup(96)
    mtz.set_cell_for_all(gemmi.UnitCell(79.1, 79.1, 38.0, 90, 90, 90))
    mtz.add_dataset("ref")
    mtz.add_column("IMEAN", "J")
    mtz.add_column("SIGIMEAN", "Q")
    rows = np.array([(*h, v, 1.0) for h, v in truth.items() if v > 0], dtype=np.float32)
    mtz.set_data(rows)
    ref = tmp_path / "ref.mtz"
    mtz.write_to_file(str(ref))
    o = tmp_path / "z"
    assert scale_main([f"{out}_process.h5", "-o", str(o), "-z", str(ref)]) == 0
    captured = capsys.readouterr()
    assert "against the reference" in captured.err and "CCref" in captured.out
    assert gemmi.read_mtz_file(f"{o}.mtz").spacegroup.number == 96
    assert not list(tmp_path.glob("z_iter*_scale.dat"))  # only written without a reference


def _reference(path, items, sg=96, cell=(79.1, 79.1, 38.0, 90, 90, 90)):
    """An MTZ reference (IMEAN) of ``items`` {hkl: I} in space group ``sg`` / ``cell``."""
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup(sg)
    mtz.set_cell_for_all(gemmi.UnitCell(*cell))
    mtz.add_dataset("ref")
    mtz.add_column("IMEAN", "J")
    mtz.add_column("SIGIMEAN", "Q")
    mtz.set_data(np.array([(*h, v, 1.0) for h, v in items], dtype=np.float32))
    mtz.write_to_file(str(path))
    return path


def test_partial_reference_keeps_every_measured_reflection(rot, merged_run, tmp_path, capsys):
    """Issue 14: a reference to 2.5 Å (or of 2 reflections) sets the scale; every measured
    reflection is merged, in the data's space group."""
    out, _ = merged_run
    truth, _, _, _ = _truth_merged(rot / "r_truth.h5")
    uc = gemmi.UnitCell(79.1, 79.1, 38.0, 90, 90, 90)
    low = [(h, v) for h, v in truth.items() if v > 0 and uc.calculate_d(list(h)) >= 2.5]
    assert scale_main([f"{out}_process.h5", "-o", str(tmp_path / "p")]) == 0
    n_plain = len(_mtz(tmp_path / "p.mtz")[0])
    for name, items in (("half", low), ("two", low[:2])):
        ref = _reference(tmp_path / f"{name}.mtz", items)
        assert scale_main([f"{out}_process.h5", "-o", str(tmp_path / name), "-z", str(ref)]) == 0
        hkl, _, d, m = _mtz(tmp_path / f"{name}.mtz")
        assert len(hkl) == n_plain and m.spacegroup.number == 96
        assert d.min() < 2.4  # beyond the reference's limit
    assert "scaled without it" in capsys.readouterr().err  # the 2-reflection reference


@pytest.mark.parametrize("sg,cell,msg", [
    (4, (40, 50, 60, 90, 100, 90), "point group 2) does not match the data's P 43 21 2"),
    (96, (91.0, 91.0, 43.7, 90, 90, 90), "differs from the data's"),
])
def test_incompatible_reference_is_refused_before_work(rot, merged_run, tmp_path, capsys, sg,
                                                       cell, msg):
    """Issue 14: a reference in another point group or a cell 15 % off: one line, exit 2,
    nothing written — jfjoch_scale and jfjoch_process (before any image is read)."""
    out, _ = merged_run
    ref = _reference(tmp_path / "zref.mtz", [((1, 2, 3), 10.0), ((2, 3, 4), 20.0)], sg, cell)
    rc = scale_main([f"{out}_process.h5", "-o", str(tmp_path / "b"), "-z", str(ref)])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.glob("b*"))
    rc = process_main([str(rot / "r_master.h5"), "-o", str(tmp_path / "c"), "-R", "-S", "96",
                       "-C", "79.1,79.1,38,90,90,90", "-M", "-z", str(ref)])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err
    assert not list(tmp_path.glob("c*"))


@pytest.mark.parametrize("args,msg", [
    (["-z", "/nonexistent/ref.mtz"], "reference MTZ not found"),
    (["-S", "195"], "does not fit space group"),
    (["--min-partiality", "2"], "minimum partiality"),
])
def test_bad_scaling_input_is_one_line_exit_2(merged_run, tmp_path, capsys, args, msg):
    out, _ = merged_run
    rc = scale_main([f"{out}_process.h5", "-o", str(tmp_path / "b")] + args)
    err = capsys.readouterr().err
    assert rc == 2
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("b*"))


def test_process_without_reflections_cannot_be_scaled(rot, tmp_path, capsys):
    o = tmp_path / "s"
    assert process_main([str(rot / "r_master.h5"), "-o", str(o), "-X", "none", "-e", "1"]) == 0
    rc = scale_main([f"{o}_process.h5", "-o", str(tmp_path / "q")])
    assert rc == 2 and "no integrated reflections" in capsys.readouterr().err


def test_merge_requested_but_nothing_indexed(tmp_path, capsys):
    """Blank stills with -M: the _process.h5 is written, then a one-line error, exit 1."""
    d = tmp_path / "b"
    assert simulate_main(["--preset", "lyso_serial", "-o", str(d), "--n-images", "3", "-q",
                          "--set", "blank_fraction=1.0"]) == 0
    o = tmp_path / "o"
    rc = process_main([f"{d}_master.h5", "-o", str(o), "-X", "ffbidx", "-C",
                       "79.1,79.1,38,90,90,90", "-S", "96", "-M"])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing to merge" in err and "Traceback" not in err
    assert (tmp_path / "o_process.h5").is_file() and not (tmp_path / "o.mtz").exists()


def test_without_s_the_masters_space_group_is_used(rot, tmp_path, capsys):
    """No -S: the run is refined with a free (triclinic) cell and merged in the master's
    space group (P4₃2₁2), the merging cell symmetrised to it."""
    o = tmp_path / "n"
    assert process_main([str(rot / "r_master.h5"), "-o", str(o), "-R=10", "-M"]) == 0
    assert "space group 96" in capsys.readouterr().err
    m = gemmi.read_mtz_file(f"{o}.mtz")
    a, b, c, al, be, ga = m.cell.parameters
    assert m.spacegroup.number == 96 and a == b and (al, be, ga) == (90, 90, 90)
    assert abs(a / 79.1 - 1) < 0.005 and abs(c / 38.0 - 1) < 0.005


def test_jfjoch_scale_unit_cell_override_reaches_the_output(merged_run, tmp_path):
    """``crystal.unit_cell=[...]`` was accepted and ignored (the MTZ kept the stored cell);
    it is the merging cell now, and one that does not fit the space group is refused."""
    out, _ = merged_run
    o = tmp_path / "cell"
    cell = [79.5, 79.5, 38.2, 90, 90, 90]
    assert scale_main([f"{out}_process.h5", "-o", str(o), "-S", "96",
                       "crystal.unit_cell=[" + ",".join(map(str, cell)) + "]"]) == 0
    _, _, _, m = _mtz(f"{o}.mtz")
    np.testing.assert_allclose(m.cell.parameters, cell, atol=1e-3)
    assert scale_main([f"{out}_process.h5", "-o", str(o), "-S", "96",
                       "crystal.unit_cell=[79.5,70.0,38.2,90,90,90]"]) == 2


def test_suggested_limit_of_a_short_sweep_is_where_the_signal_ends(merged_run):
    """The 16-image sweep's structure factors stop at 2.0 Å (lyso_rotation's d_min_A):
    the CC½ fit crosses 0.3 near there, printed and stored. Multiplicity ≈ 1.3 leaves ≈ 200
    pairs, 10 bins of ≥ 20: the bins around the edge span 1.94 Å (CC½ 0.98) and 1.62 Å
    (CC½ 0.09), so the crossing lies between them (the 25-image demo gives 2.00 Å)."""
    out, console = merged_run
    with h5py.File(f"{out}_process.h5", "r") as f:
        d = float(f["/entry/scaling/suggested_d_min"][()])
    assert 1.6 <= d <= 2.15, d
    assert "Suggested high-resolution limit: " in console and "not determined" not in console


def test_jfjoch_scale_without_p_takes_the_recorded_model(merged_run, tmp_path, capsys):
    """The run was processed with -P rot: jfjoch_scale without -P scales with rot (not the
    default's fixed for rotation data) and says so in one line (issue 14)."""
    out, _ = merged_run
    capsys.readouterr()
    assert scale_main([f"{out}_process.h5", "-o", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert ("jfjoch_scale: partiality model: rot (-P rot, recorded in the input; -P chooses "
            "another)") in err
    assert "partiality rot" in err  # the scaling summary: the model that was fitted
