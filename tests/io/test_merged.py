"""Merged-reflection files (jfx.io.merged) and the HTML report (jfx.io.report)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import gemmi
import numpy as np
import pytest

from jfx.io.errors import InputError
from jfx.io.merged import (
    read_reference_mtz,
    write_cif,
    write_merged,
    write_mtz,
    write_scale_dat,
)
from jfx.io.report import write_report_html
from jfx.scale.merge import merge
from jfx.scale.stats import merging_statistics
from jfx.symmetry.asu import asu_map

CELL = (30.0, 30.0, 40.0, 90.0, 90.0, 90.0)
SG = 96


def _data(anomalous: bool, seed: int = 0):
    amap, I, sig, image, mr, _ = _data_hkl(anomalous, seed)
    return amap, I, sig, image, mr


def _data_hkl(anomalous: bool, seed: int = 0):
    sg = gemmi.find_spacegroup_by_number(SG)
    base = np.asarray(gemmi.make_miller_array(gemmi.UnitCell(*CELL), sg, 4.0))
    rng = np.random.default_rng(seed)
    n = 1200
    pick = rng.integers(0, len(base), n)
    rots = [np.asarray(op.rot) // op.DEN for op in sg.operations().sym_ops]
    which = rng.integers(0, len(rots), n)
    hkl = np.empty((n, 3), int)
    for t, r in enumerate(rots):
        hkl[which == t] = base[pick[which == t]] @ r
    hkl *= rng.choice([-1, 1], n)[:, None]
    sig = rng.uniform(1.0, 3.0, n)
    I = rng.exponential(50.0, len(base))[pick] + rng.normal(size=n) * sig
    amap = asu_map(hkl, SG, anomalous)
    return (amap, I, sig, rng.integers(0, 20, n), merge(amap, I, sig, CELL, SG, anomalous),
            hkl)


def _no_temp_files(d):
    return not [p for p in d.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("anomalous", [False, True])
def test_mtz_round_trip(tmp_path, anomalous):
    _, _, _, _, mr = _data(anomalous)
    p = write_mtz(tmp_path / "x.mtz", mr, wavelength_A=0.9795)
    assert p.is_file() and _no_temp_files(tmp_path)
    mtz = gemmi.read_mtz_file(str(p))
    cols = {c.label: c.type for c in mtz.columns}
    expect = {"H": "H", "K": "H", "L": "H", "IMEAN": "J", "SIGIMEAN": "Q", "N_obs": "I"}
    if anomalous:
        expect.update({"I(+)": "K", "SIGI(+)": "M", "I(-)": "K", "SIGI(-)": "M",
                       "N(+)": "I", "N(-)": "I"})
    assert cols == expect
    assert mtz.spacegroup.number == SG
    assert mtz.cell.parameters == pytest.approx(CELL)
    assert mtz.datasets[-1].wavelength == pytest.approx(0.9795)
    arr = np.asarray(mtz.array)
    assert arr.shape[0] == len(mr)
    hkl = arr[:, :3].astype(int)
    assert hkl.tolist() == sorted(hkl.tolist())  # sorted
    rasu = gemmi.ReciprocalAsu(mtz.spacegroup)
    assert all(rasu.is_in(h) for h in hkl.tolist())  # in the CCP4 ASU
    order = {tuple(h): i for i, h in enumerate(mr.hkl.tolist())}
    idx = np.array([order[tuple(h)] for h in hkl.tolist()])

    def col(name):
        return np.asarray(mtz.column_with_label(name).array, float)

    np.testing.assert_allclose(col("IMEAN"), mr.I[idx], rtol=1e-6)
    np.testing.assert_allclose(col("SIGIMEAN"), mr.sigma[idx], rtol=1e-6)
    assert np.array_equal(col("N_obs"), mr.n_obs[idx])
    if anomalous:
        np.testing.assert_allclose(col("I(+)"), mr.I_plus[idx], rtol=1e-6)
        np.testing.assert_allclose(col("SIGI(-)"), mr.sig_minus[idx], rtol=1e-6)
        im = col("I(-)")
        assert np.array_equal(np.isnan(im), np.isnan(mr.I_minus[idx]))
        ok = ~np.isnan(im)
        np.testing.assert_allclose(im[ok], mr.I_minus[idx][ok], rtol=1e-6)


def test_mtz_friedel_counts_against_the_observations(tmp_path):
    """N(+)/N(−) read back with gemmi equal the observations of each Friedel half counted
    from the raw indices (gemmi's ASU mapping: odd ISYM = I(+)); centric rows have
    I(+) = I(−) = IMEAN and N(+) = N(−) = N_obs; a missing mate is NaN with N = 0."""
    _, _, _, _, mr, hkl = _data_hkl(True, 5)
    sg = gemmi.find_spacegroup_by_number(SG)
    ops, rasu = sg.operations(), gemmi.ReciprocalAsu(sg)
    count: dict = {}
    for h in hkl.tolist():
        if ops.is_systematically_absent(h):
            continue
        a, isym = rasu.to_asu(h, ops)
        a = tuple(a)
        sign = "+" if ops.is_reflection_centric(list(a)) or isym % 2 == 1 else "-"
        count[a, sign] = count.get((a, sign), 0) + 1
    mtz = gemmi.read_mtz_file(str(write_mtz(tmp_path / "a.mtz", mr)))
    hkl_out = np.asarray(mtz.make_miller_array()).tolist()

    def col(name):
        return np.asarray(mtz.column_with_label(name).array, float)

    n_plus, n_minus, n_obs = col("N(+)"), col("N(-)"), col("N_obs")
    centric = np.array([ops.is_reflection_centric(h) for h in hkl_out])
    exp_p = np.array([count.get((tuple(h), "+"), 0) for h in hkl_out])
    exp_m = np.array([count.get((tuple(h), "-"), 0) for h in hkl_out])
    assert centric.any() and (~centric).any()
    np.testing.assert_array_equal(n_plus, exp_p)
    np.testing.assert_array_equal(n_minus[~centric], exp_m[~centric])
    np.testing.assert_array_equal(n_minus[centric], n_obs[centric])
    np.testing.assert_array_equal(n_plus[~centric] + n_minus[~centric], n_obs[~centric])
    ip, im, imean = col("I(+)"), col("I(-)"), col("IMEAN")
    np.testing.assert_array_equal(ip[centric], im[centric])
    np.testing.assert_allclose(ip[centric], imean[centric], rtol=1e-6)
    lone = ~centric & (exp_m == 0)
    assert lone.any() and np.isnan(im[lone]).all() and (n_minus[lone] == 0).all()


@pytest.mark.parametrize("anomalous", [False, True])
def test_cif_read_back(tmp_path, anomalous):
    _, _, _, _, mr = _data(anomalous, 1)
    p = write_cif(tmp_path / "x.cif", mr)
    block = gemmi.cif.read(str(p)).sole_block()
    assert float(block.find_value("_cell.length_c")) == pytest.approx(40.0)
    assert gemmi.cif.as_string(block.find_value("_symmetry.space_group_name_H-M")) \
        == "P 43 21 2"
    assert int(block.find_value("_symmetry.Int_Tables_number")) == SG
    tags = ["index_h", "index_k", "index_l", "intensity_meas", "intensity_sigma"]
    if anomalous:
        tags += ["pdbx_I_plus", "pdbx_I_plus_sigma", "pdbx_I_minus", "pdbx_I_minus_sigma"]
    tab = block.find("_refln.", tags)
    assert len(tab) == len(mr)
    got_hkl = np.array([[int(r[0]), int(r[1]), int(r[2])] for r in tab])
    assert np.array_equal(got_hkl, mr.hkl)

    def num(i):
        return np.array([np.nan if r[i] == "?" else float(r[i]) for r in tab])

    np.testing.assert_allclose(num(3), mr.I, atol=1e-4)
    np.testing.assert_allclose(num(4), mr.sigma, atol=1e-4)
    if anomalous:
        np.testing.assert_allclose(num(5), mr.I_plus, atol=1e-4)
        im = num(7)
        assert np.array_equal(np.isnan(im), np.isnan(mr.I_minus))
        assert np.isnan(im).any()  # some acentric reflections lack I(-) → written as '?'
        # gemmi's own reflection reader agrees
        rb = gemmi.as_refln_blocks(gemmi.cif.read(str(p)))[0]
        np.testing.assert_allclose(rb.make_float_array("pdbx_I_minus"), mr.I_minus,
                                   atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("anomalous", [False, True])
def test_hkl_text_parsed_back(tmp_path, anomalous):
    _, _, _, _, mr = _data(anomalous, 2)
    p = write_merged(tmp_path / "out", mr, "txt")
    assert p.name == "out.hkl"
    lines = p.read_text().splitlines()
    header = [ln for ln in lines if ln.startswith("#")]
    assert any(ln.split()[1:] == ["cell", "30.0000", "30.0000", "40.0000", "90.0000", "90.0000",
                                  "90.0000"] for ln in header)
    assert any(ln.startswith("# space_group 96 P 43 21 2") for ln in header)
    rows = np.array([[float(x) for x in ln.split()] for ln in lines if not ln.startswith("#")])
    assert rows.shape[1] == 6
    if not anomalous:
        assert np.array_equal(rows[:, :3].astype(int), mr.hkl)
        np.testing.assert_allclose(rows[:, 3], mr.I, atol=1e-4)
        np.testing.assert_allclose(rows[:, 4], mr.sigma, atol=1e-4)
        assert np.array_equal(rows[:, 5], mr.n_obs)
    else:
        got = {tuple(r[:3].astype(int)): r[3:] for r in rows}
        for i, h in enumerate(mr.hkl.tolist()):
            if mr.n_plus[i]:
                assert got[tuple(h)][0] == pytest.approx(mr.I_plus[i], abs=1e-4)
                assert got[tuple(h)][2] == mr.n_plus[i]
            mh = tuple(-x for x in h)
            if mr.centric[i]:
                assert mh not in got
            elif mr.n_minus[i]:
                assert got[mh][0] == pytest.approx(mr.I_minus[i], abs=1e-4)
            else:
                assert mh not in got
        assert len(rows) == int((mr.n_plus > 0).sum() + ((mr.n_minus > 0) & ~mr.centric).sum())


def test_write_merged_formats(tmp_path):
    _, _, _, _, mr = _data(False)
    assert write_merged(tmp_path / "a", mr).name == "a.mtz"
    assert write_merged(tmp_path / "a", mr, "cif").name == "a.cif"
    with pytest.raises(InputError):
        write_merged(tmp_path / "a", mr, "xds")
    assert _no_temp_files(tmp_path)


def test_scale_dat(tmp_path):
    p = write_scale_dat(tmp_path / "p_iter1_scale.dat", np.arange(3), [1.0, 0.5, 2.25],
                        [0.0, -3.5, 12.0], [0.9, np.nan, 0.75], [False, True, False])
    rows = [ln.split() for ln in p.read_text().splitlines()]
    assert len(rows) == 3 and all(len(r) == 5 for r in rows)
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    assert [float(r[1]) for r in rows] == [1.0, 0.5, 2.25]
    assert [float(r[2]) for r in rows] == [0.0, -3.5, 12.0]
    assert float(rows[0][3]) == 0.9 and np.isnan(float(rows[1][3]))
    assert [int(r[4]) for r in rows] == [0, 1, 0]
    with pytest.raises(ValueError):
        write_scale_dat(tmp_path / "q.dat", np.arange(3), [1.0], [0.0], [0.0], [0])


def test_reference_mtz_intensity_and_amplitude(tmp_path):
    _, _, _, _, mr = _data(False, 3)
    write_mtz(tmp_path / "ref.mtz", mr)
    hkl, I, cell, sg = read_reference_mtz(tmp_path / "ref.mtz")
    assert sg == SG and cell == pytest.approx(CELL)
    np.testing.assert_allclose(I, mr.I, rtol=1e-6)
    assert np.array_equal(hkl, mr.hkl)
    # an MTZ with only an F column (e.g. a model) → I = F²
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.find_spacegroup_by_number(19)
    mtz.set_cell_for_all(gemmi.UnitCell(20, 30, 40, 90, 90, 90))
    mtz.add_dataset("d")
    mtz.add_column("FWT", "F")
    mtz.add_column("PHWT", "P")
    data = np.array([[1, 2, 3, 10.0, 0.0], [2, 0, 1, 3.0, 90.0], [0, 1, 1, np.nan, 0.0]],
                    np.float32)
    mtz.set_data(data)
    mtz.write_to_file(str(tmp_path / "f.mtz"))
    hkl, I, cell, sg = read_reference_mtz(tmp_path / "f.mtz")
    assert sg == 19 and hkl.tolist() == [[1, 2, 3], [2, 0, 1]]
    np.testing.assert_allclose(I, [100.0, 9.0])
    assert read_reference_mtz(tmp_path / "f.mtz", space_group=18)[3] == 18


def test_reference_mtz_errors(tmp_path):
    def msg(path):
        with pytest.raises(InputError) as e:
            read_reference_mtz(path)
        text = str(e.value)
        assert "\n" not in text and text
        return text

    assert "does not exist" in msg(tmp_path / "missing.mtz")
    (tmp_path / "bad.mtz").write_text("this is not an MTZ file\n" * 20)
    assert "cannot read" in msg(tmp_path / "bad.mtz")
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.find_spacegroup_by_number(1)
    mtz.set_cell_for_all(gemmi.UnitCell(20, 30, 40, 90, 90, 90))
    mtz.add_dataset("d")
    mtz.add_column("FREE", "I")
    mtz.set_data(np.array([[1, 2, 3, 0]], np.float32))
    mtz.write_to_file(str(tmp_path / "nocol.mtz"))
    assert "no intensity" in msg(tmp_path / "nocol.mtz")


@pytest.mark.parametrize("anomalous", [False, True])
def test_html_report(tmp_path, anomalous):
    amap, I, sig, image, mr = _data(anomalous, 4)
    st = merging_statistics(amap, I, sig, image, image % 2, CELL, SG, anomalous=anomalous,
                            n_shells=4, reference=(mr.hkl, mr.I * 2.0))
    p = write_report_html(tmp_path / "report.html", st)
    text = p.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and _no_temp_files(tmp_path)
    n_plots = 4 if anomalous else 3
    assert text.count("<svg") == n_plots
    for title in ("Correlation coefficients", "Mean I/σ(I)", "Completeness"):
        assert title in text
    assert ("Anomalous signal" in text) == anomalous
    start = 0
    for _ in range(n_plots):  # every plot is well-formed XML with at least one polyline
        a = text.index("<svg", start)
        b = text.index("</svg>", a) + len("</svg>")
        root = ET.fromstring(text[a:b])
        assert root.findall(".//{http://www.w3.org/2000/svg}polyline")
        start = b
    assert text.count("<tr") == 1 + st.n_shells + 1  # header + shells + overall
    assert ("CC_anom" in text) == anomalous
    for c in ("anom_completeness", "anom_multiplicity", "dano_over_sigma", "r_anom",
              "n_anom_pairs"):
        assert (f"<th>{c}" in text) == anomalous
    if anomalous:
        # the anomalous plot: one point per shell at its <|ΔI|/σ(ΔI)>, against the noise line
        a = text.index("<svg", text.index('aria-label="Anomalous signal"') - 300)
        root = ET.fromstring(text[a:text.index("</svg>", a) + 6])
        ns = "{http://www.w3.org/2000/svg}"
        cy = np.array([float(c.get("cy")) for c in root.iter(ns + "circle")])
        assert len(cy) == 2 * st.n_shells
        vals = np.concatenate([st.dano_over_sigma[:-1], np.full(st.n_shells, 0.7979)])
        assert np.corrcoef(cy, vals)[0, 1] < -0.9999  # SVG y grows downwards
        row = text[text.index('<tr class="overall">'):].split("</tr>")[0]
        assert f"<td>{100 * st.anom_completeness[-1]:.1f}</td>" in row
        assert f"<td>{int(st.n_anom_pairs[-1])}</td>" in row


def test_html_report_header_and_per_image_plots(tmp_path):
    """Issue 14: the report opens with the dataset, space group, cell and date, and shows
    scale, B and CC against the image (rejected images marked) — each point where its value
    puts it; beyond MAX_IMAGE_POINTS images, medians of blocks."""
    from jfx.io.report import MAX_IMAGE_POINTS, ReportHeader, image_plots

    amap, I, sig, image, mr = _data(False, 4)
    st = merging_statistics(amap, I, sig, image, image % 2, CELL, SG, n_shells=4)
    rng = np.random.default_rng(3)
    n = 40
    images = {"run": np.zeros(n, int), "image": np.arange(n) + 10,
              "scale": rng.uniform(0.5, 2.0, n), "bfactor": rng.normal(0, 3, n),
              "cc": rng.uniform(0.2, 0.99, n), "rejected": (np.arange(n) % 7 == 3).astype(np.uint8)}
    hdr = ReportHeader(datasets=("/data/lyso_master.h5",), space_group=96,
                       cell=(79.1, 79.1, 38.0, 90.0, 90.0, 90.0), program="jfx test",
                       date="2026-12-04T10:00:00+00:00", partiality_model="rot", n_images=n)
    text = write_report_html(tmp_path / "r.html", st, header=hdr, images=images).read_text()
    for s in ("/data/lyso_master.h5", "P 43 21 2 (96)", "79.100", "2026-12-04T10:00:00+00:00",
              "Scale factor per image", "B factor per image", "CC of each image", "rot"):
        assert s in text
    assert text.count("<svg") == 3 + 3
    ns = "{http://www.w3.org/2000/svg}"
    svgs = []
    start = 0
    while (a := text.find("<svg", start)) >= 0:
        b = text.index("</svg>", a) + 6
        svgs.append(ET.fromstring(text[a:b]))
        start = b
    scale_svg = svgs[3]
    cx = np.array([float(c.get("cx")) for c in scale_svg.iter(ns + "circle")])
    cy = np.array([float(c.get("cy")) for c in scale_svg.iter(ns + "circle")])
    assert len(cx) == n and np.all(np.diff(cx) > 0)  # image order along x
    # SVG y grows downwards: the largest scale is the highest point, linearly
    assert np.corrcoef(cy, images["scale"])[0, 1] < -0.9999
    assert len(list(scale_svg.iter(ns + "path"))) == int(images["rejected"].sum())
    # no B plot when B was not refined
    assert len(image_plots({**images, "bfactor": np.zeros(n)})) == 2
    # many stills: one point per block, the block medians
    m = 3 * MAX_IMAGE_POINTS
    big = {"image": np.arange(m), "scale": np.arange(m, dtype=float), "cc": np.ones(m)}
    root = ET.fromstring(image_plots(big)[0])
    pts = next(root.iter(ns + "polyline")).get("points").split()
    assert len(pts) == MAX_IMAGE_POINTS
