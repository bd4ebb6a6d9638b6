"""Indexing configuration: Hydra defaults equal the dataclass defaults; bad values rejected."""

from __future__ import annotations

import dataclasses

import pytest

from jfx import config
from jfx.index.factory import make_indexer
from jfx.index.ffbidx import FFBIndexer, FFBSettings
from jfx.index.fft import FFTIndexer, FFTSettings
from jfx.index.indexing import IndexOptions
from jfx.index.settings import IndexSettings


def _settings(*overrides):
    return config.process_settings(config.compose("process", list(overrides)))


@pytest.mark.parametrize("alg", ["auto", "ffbidx", "fft", "fftw", "none"])
def test_config_defaults_equal_the_code_defaults(alg):
    extra = ["crystal.unit_cell=[79.1,79.1,38,90,90,90]"] if alg == "ffbidx" else []
    s = _settings(f"index={alg}", *extra).index
    assert s.algorithm == alg
    assert s.options() == IndexOptions()
    assert s.fft == FFTSettings()
    assert s.ffbidx == FFBSettings()
    assert dataclasses.replace(s, algorithm="auto") == IndexSettings()


def test_overrides_reach_the_strategies():
    s = _settings("index=fftw", "index.fft.n_directions=2048", "index.max_lattices=3",
                  "index.ffbidx.coarse_keep=64").index
    assert s.options().max_lattices == 3
    ix = make_indexer(s.algorithm, None, s)
    assert isinstance(ix, FFTIndexer) and ix.settings.n_directions == 2048
    assert ix.settings.backend == "numpy"
    assert make_indexer("fft", None, s).settings.backend == "jax"
    fb = make_indexer("ffbidx", (79.1, 79.1, 38, 90, 90, 90), s)
    assert isinstance(fb, FFBIndexer) and fb.settings.coarse_keep == 64
    assert make_indexer("none", None, s) is None
    # auto: known cell -> ffbidx; otherwise fft on GPU, fftw on CPU
    assert isinstance(make_indexer("auto", (79.1, 79.1, 38, 90, 90, 90), s, gpu=False),
                      FFBIndexer)
    assert make_indexer("auto", None, s, gpu=False).settings.backend == "numpy"
    assert make_indexer("auto", None, s, gpu=True).settings.backend == "jax"


@pytest.mark.parametrize("override,needle", [
    ("index.max_lattices=0", "max_lattices"),
    ("index.tolerance=0.7", "tolerance"),
    ("index.min_fraction=1.5", "min_fraction"),
    ("index.fft.min_cell_A=400", "min_cell_A"),
    ("index.fft.n_directions=10", "n_directions"),
    ("index.ffbidx.triml=0.5", "FFBSettings"),
])
def test_bad_values_are_rejected(override, needle):
    with pytest.raises(ValueError, match=needle):
        _settings("index=fftw", override)


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError):
        _settings("index=fftw", "index.fft.no_such_key=1")
    with pytest.raises(ValueError, match="unknown index.fft"):
        IndexSettings(fft={"no_such_key": 1})


def test_ffbidx_without_cell_is_rejected():
    with pytest.raises(ValueError, match="requires a unit cell"):
        make_indexer("ffbidx", None)
