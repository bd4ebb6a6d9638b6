"""The stage architecture: one face per stage, no stage importing another, the runner as the
only orchestrator, and the defects the old dictionary interface hid."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import numpy as np
import pytest

import jfx
from jfx.models.geometry import Beam, Detector, Geometry
from jfx.models.spots import SpotList
from jfx.pipeline import run as runner
from jfx.pipeline.state import ImageSelection, IndexingTable, ProcessState

PKG = Path(jfx.__file__).parent
STAGE_MODULES = ["spotfind_stage", "index_stage", "refine_stage", "integrate_stage",
                 "pixelrefine_stage", "scale_stage"]


def _imports(path: Path) -> set[str]:
    """Every module imported anywhere in ``path`` (module level and inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("name", STAGE_MODULES)
def test_every_stage_has_the_same_face_and_imports_no_other_stage(name):
    mod = importlib.import_module(f"jfx.pipeline.{name}")
    assert callable(mod.run) and callable(mod.summary)
    others = {f"jfx.pipeline.{o}" for o in STAGE_MODULES if o != name} | {"jfx.pipeline.run"}
    assert not (_imports(PKG / "pipeline" / f"{name}.py") & others)
    assert runner.STAGES[name.removesuffix("_stage")] is mod


def _module_of(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_no_import_circle_and_no_module_over_700_lines():
    files = sorted(PKG.rglob("*.py"))
    mods = {_module_of(p): p for p in files}
    graph = {}
    for m, p in mods.items():
        deps = set()
        for imp in _imports(p):
            while imp and imp not in mods:
                imp = imp.rpartition(".")[0]
            if imp and imp != m and not m.startswith(imp + "."):  # a package's own parents
                deps.add(imp)
        graph[m] = deps
    # a circle = a strongly connected component with more than one module (Tarjan)
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    circles = [sorted(c) for c in comps if len(c) > 1]
    assert circles == []
    long = {m: n for m, p in mods.items() if (n := len(p.read_text().splitlines())) > 700}
    assert long == {}


def _state(lattice_id: np.ndarray, hkl: np.ndarray) -> ProcessState:
    n, s = lattice_id.shape
    geo = Geometry(Beam.create(1.0), Detector.create(100.0, (50.0, 50.0), (100, 100)))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, (n, s)).astype(np.float32)
    spots = SpotList(image=np.arange(n), x_px=x, y_px=x[:, ::-1].copy(), frame=x * 0,
                     intensity=x * 0 + 1, n_pixels=np.ones((n, s), np.int32), d_A=x * 0 + 2,
                     ice_ring=np.zeros((n, s), bool), valid=np.ones((n, s), bool),
                     n_found=np.full(n, s, np.int32), strong_pixels=np.zeros(n, np.int32))
    basis = np.full((n, 2, 3, 3), np.nan)
    basis[:, 0] = np.diag([40.0, 50.0, 60.0])
    basis[:, 1] = np.diag([41.0, 51.0, 61.0])
    ix = IndexingTable(algorithm="fft", mode="stills", status=np.zeros(n, np.int32), basis=basis,
                       hkl=hkl, lattice_id=lattice_id, bravais=("oP",) * n, n_attempted=n,
                       geometry=geo)
    return ProcessState(selection=ImageSelection(np.arange(n)), geometry=geo, spots=spots,
                        indexing=ix)


def test_a_lattice_is_refined_on_its_own_spots_with_the_indexers_hkl():
    """Defect of the dictionary interface: with index.max_lattices > 1, ``peakIndexed``
    marked the spots of every lattice and lattice 0 was refined on all of them with hkl
    re-derived by rounding against lattice 0. Now only lattice 0's spots enter, with the
    indexer's own Miller indices."""
    from jfx.pipeline.refine_stage import still_spots

    n, s = 3, 8
    lid = np.tile(np.array([0, 0, 1, 1, -1, 0, 1, 0], np.int32), (n, 1))
    hkl = np.arange(n * s * 3, dtype=np.int32).reshape(n, s, 3)
    sel, spots, basis = still_spots(_state(lid, hkl))
    np.testing.assert_array_equal(sel, np.arange(n))
    np.testing.assert_array_equal(np.asarray(spots.valid), lid == 0)
    np.testing.assert_array_equal(np.asarray(spots.hkl)[lid == 0], hkl[lid == 0])
    np.testing.assert_allclose(basis[0], np.diag([40.0, 50.0, 60.0]))


def test_file_marks_the_first_lattices_spots_and_keeps_every_lattice():
    from jfx.io.process_h5 import state_groups
    from jfx.models.images import ImageStats

    n, s = 2, 5
    lid = np.tile(np.array([0, 1, -1, 0, 1], np.int32), (n, 1))
    st = _state(lid, np.zeros((n, s, 3), np.int32))
    from jfx.pipeline.state import SpotImageStats

    st = dataclasses.replace(
        st, image_stats=ImageStats(np.arange(n), np.ones(n), np.ones(n), np.zeros(n),
                                   np.zeros(n)),
        spot_stats=SpotImageStats(np.zeros(n, np.float32), np.zeros(n, np.float32),
                                  np.zeros(n, np.int32)))
    mx = state_groups(st)["MX"]
    np.testing.assert_array_equal(mx["peakIndexed"], lid == 0)
    np.testing.assert_array_equal(mx["peakLattice"], lid)
    assert mx["latticeIndexedAll"].shape == (n, 2, 9)
    np.testing.assert_allclose(mx["latticeIndexed"][0], np.diag([40.0, 50.0, 60.0]).reshape(9))
    assert mx["latticeIndexed"].dtype == np.float64  # float32 only in the file


def test_stills_retry_and_rotation_rescue_live_in_the_runner():
    """Only run.py calls a stage's run() for a retry; no stage module mentions another."""
    src = (PKG / "pipeline" / "run.py").read_text()
    assert "_retry_rotation" in src and "_retry_stills" in src
    for name in STAGE_MODULES:
        text = (PKG / "pipeline" / f"{name}.py").read_text()
        assert "_retry" not in text


def test_bandwidth_option_replaces_the_files_bandwidth(tmp_path):
    """--bandwidth was parsed and read by nothing; it now replaces the beam's bandwidth
    (still prediction envelope and partiality) for the whole run."""
    from jfx.config import compose, process_settings
    from jfx.io.nxmx import open_master
    from jfx.pipeline import process
    from tests.cli.conftest import make_master

    master, *_ = make_master(tmp_path, rotation=False, n_images=4)
    for opt, want in ((["pixelrefine.bandwidth_fwhm=0.012"], 0.012), ([], 0.0)):
        settings = process_settings(compose("process", ["index=none", "azint.enabled=false",
                                                        *opt]))
        with open_master(master) as m:
            st = process(settings, m).state
        assert float(st.geometry.beam.bandwidth_fwhm) == pytest.approx(want)
        assert st.indexing is None and st.spots.x_px.shape[0] == 4
