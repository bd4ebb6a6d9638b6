"""Indexing configuration: one strategy class per -X option; config defaults are the class
defaults; each strategy builds its indexer (auto resolved in one place); bad values rejected."""

from __future__ import annotations

import pytest

from jfx import config
from jfx.index.ffbidx import FFBIndexer, FFBSettings
from jfx.index.fft import FFTIndexer, FFTSettings
from jfx.index.indexing import IndexOptions
from jfx.index.settings import (
    AutoIndexing,
    FFBIdxIndexing,
    FFTIndexing,
    FFTWIndexing,
    IndexSettings,
    NoIndexing,
)

CELL = (79.1, 79.1, 38, 90, 90, 90)
CLASSES = {"auto": AutoIndexing, "ffbidx": FFBIdxIndexing, "fft": FFTIndexing,
           "fftw": FFTWIndexing, "none": NoIndexing}


def _settings(*overrides):
    return config.process_settings(config.compose("process", list(overrides)))


@pytest.mark.parametrize("alg", sorted(CLASSES))
def test_config_defaults_equal_the_code_defaults(alg):
    extra = ["crystal.unit_cell=[79.1,79.1,38,90,90,90]"] if alg == "ffbidx" else []
    s = _settings(f"index={alg}", *extra).index
    assert type(s) is CLASSES[alg] and s.name == alg
    assert isinstance(s, IndexSettings) and isinstance(s, IndexOptions)
    assert s == CLASSES[alg]()
    assert s.shared_options() == {k: getattr(IndexOptions(), k)
                                  for k in IndexOptions().__dataclass_fields__}
    assert getattr(s, "fft", FFTSettings()) == FFTSettings()
    assert getattr(s, "ffbidx", FFBSettings()) == FFBSettings()


def test_each_option_has_only_its_own_keys():
    """-X ffbidx has no index.fft.*, -X fft/fftw no index.ffbidx.*, -X none neither."""
    cfg = config.compose("process", ["index=ffbidx"])
    assert "ffbidx" in cfg.index and "fft" not in cfg.index
    assert set(config.compose("process", ["index=fftw"]).index) >= {"fft", "tolerance"}
    assert "ffbidx" not in config.compose("process", ["index=fftw"]).index
    none = config.compose("process", ["index=none"]).index
    assert "fft" not in none and "ffbidx" not in none and "max_lattices" in none
    with pytest.raises(ValueError, match="Could not override 'index.fft.n_directions'"):
        config.compose("process", ["index=ffbidx", "index.fft.n_directions=2048"])


def test_overrides_reach_the_strategies():
    s = _settings("index=fftw", "index.fft.n_directions=2048", "index.max_lattices=3").index
    assert s.max_lattices == 3  # the strategy IS the IndexOptions passed to index()
    ix = s.create_indexer(None)
    assert isinstance(ix, FFTIndexer) and ix.settings.n_directions == 2048
    assert ix.settings.backend == "numpy"
    assert FFTIndexing(fft=s.fft).create_indexer().settings.backend == "jax"
    fb = _settings("index=ffbidx", "crystal.unit_cell=[79.1,79.1,38,90,90,90]",
                   "index.ffbidx.coarse_keep=64").index.create_indexer(CELL)
    assert isinstance(fb, FFBIndexer) and fb.settings.coarse_keep == 64
    assert NoIndexing().create_indexer(CELL) is None and not NoIndexing.enabled


def test_auto_resolves_in_one_place():
    """auto: known cell -> ffbidx; otherwise fft on GPU, fftw on CPU; options carried over."""
    a = _settings("index.max_lattices=2", "index.fft.n_directions=2048",
                  "index.ffbidx.coarse_keep=64").index
    assert type(a) is AutoIndexing
    r = a.resolve(CELL, gpu=False)
    assert type(r) is FFBIdxIndexing and r.max_lattices == 2 and r.ffbidx.coarse_keep == 64
    assert type(a.resolve(None, gpu=True)) is FFTIndexing
    r = a.resolve(None, gpu=False)
    assert type(r) is FFTWIndexing and r.fft.n_directions == 2048 and r.max_lattices == 2
    assert isinstance(a.create_indexer(CELL, gpu=False), FFBIndexer)
    assert a.create_indexer(None, gpu=False).settings.backend == "numpy"
    assert a.create_indexer(None, gpu=True).settings.backend == "jax"
    assert FFTWIndexing().resolve(CELL, gpu=True) == FFTWIndexing()


@pytest.mark.parametrize("override,needle", [
    ("index.max_lattices=0", "max_lattices"),
    ("index.tolerance=0.7", "tolerance"),
    ("index.min_fraction=1.5", "min_fraction"),
    ("index.fft.min_cell_A=400", "min_cell_A"),
    ("index.fft.n_directions=10", "n_directions"),
])
def test_bad_values_are_rejected(override, needle):
    with pytest.raises(ValueError, match=needle):
        _settings("index=fftw", override)


def test_bad_ffbidx_values_are_rejected():
    with pytest.raises(ValueError, match="index.ffbidx: need 0 <= triml"):
        _settings("index=ffbidx", "crystal.unit_cell=[79,79,38,90,90,90]",
                  "index.ffbidx.triml=0.5")


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError):
        _settings("index=fftw", "index.fft.no_such_key=1")
    with pytest.raises(ValueError, match="unknown index.fft"):
        FFTWIndexing(fft={"no_such_key": 1})
    with pytest.raises(ValueError, match="Could not override 'index.fft.backend'"):
        _settings("index=fftw", "index.fft.backend=jax")  # set by the strategy, not a key


def test_ffbidx_without_cell_is_rejected():
    with pytest.raises(ValueError, match="requires a unit cell"):
        FFBIdxIndexing().create_indexer(None)
    with pytest.raises(ValueError, match="ffbidx requires a unit cell"):
        _settings("index=ffbidx")
