"""docs/extending.md, executed as written: a partiality model from outside the package (its
module and option file written from the page into a fresh directory), selected with
``partiality=my_model`` / ``-P my_model`` through ``JFX_CONFIG_PATH``, really used by
jfjoch_scale and jfjoch_process."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

import gemmi
import numpy as np
import pytest
from omegaconf import OmegaConf

from jfx.cli import process_main, scale_main
from jfx.io.process_h5 import read_process_h5

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)


def _merged(path: Path) -> dict[tuple[int, int, int], float]:
    m = gemmi.read_mtz_file(str(path))
    hkl = np.asarray(m.make_miller_array())
    return dict(zip(map(tuple, hkl), np.asarray(m.column_with_label("IMEAN").array)))


def _run(main, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_tutorial_partiality_model_from_outside_the_package(rot, merged_run, tmp_path,
                                                            monkeypatch):
    text = DOC.read_text()
    # 1 + 2: the files, at the paths their first comment line names
    files = [b for b in _blocks(text, "python") + _blocks(text, "yaml")
             if b.startswith("# ") and b.split("\n", 1)[0].endswith((".py", ".yaml"))]
    assert len(files) == 2
    for block in files:
        path = tmp_path / block.split("\n", 1)[0][2:].strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
    assert (tmp_path / "my_partiality.py").is_file()
    assert (tmp_path / "my_conf" / "partiality" / "my_model.yaml").is_file()

    # 3: the bash block, line by line ($PWD = the fresh directory)
    run_h5, _ = merged_run
    inputs = {"run_process.h5": f"{run_h5}_process.h5", "master.h5": str(rot / "r_master.h5")}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JFX_CONFIG_PATH", raising=False)
    lines = [ln for ln in _blocks(text, "bash")[0].splitlines() if ln.strip()]
    consoles = {}
    try:
        for line in lines:
            argv = shlex.split(line.replace("$PWD", str(tmp_path)))
            if argv[0] == "export":
                for assignment in argv[1:]:
                    key, value = assignment.split("=", 1)
                    if key == "PYTHONPATH":
                        monkeypatch.syspath_prepend(value)
                    else:
                        monkeypatch.setenv(key, value)
                continue
            main = {"jfjoch_scale": scale_main, "jfjoch_process": process_main}[argv[0]]
            args = [inputs.get(a, a) for a in argv[1:]]
            rc, out, err = _run(main, args)
            assert rc == 0, err
            consoles[args[args.index("-o") + 1]] = err
        # the model was used: named on the console ...
        assert set(consoles) == {"out", "out2", "run"}
        for err in consoles.values():
            assert "partiality scaled" in err, err
        # ... and every merged intensity is -P fixed's divided by the factor (0.5, 0.25)
        rc, _, err = _run(scale_main, [inputs["run_process.h5"], "-o", "fixed", "-P", "fixed"])
        assert rc == 0 and "partiality fixed" in err
        fixed = _merged(tmp_path / "fixed.mtz")
        refl = read_process_h5(f"{run_h5}_process.h5").reflections
        asu = gemmi.ReciprocalAsu(gemmi.SpaceGroup(96))
        ops = gemmi.SpaceGroup(96).operations()
        for name, factor in (("out", 0.5), ("out2", 0.25)):
            got = _merged(tmp_path / f"{name}.mtz")
            # the same reflections, but those whose partials all fall below
            # min_partiality (0.02) once multiplied by the factor
            low = {tuple(asu.to_asu(list(map(int, h)), ops)[0])
                   for h, f in zip(refl.hkl, refl.partiality) if f * factor >= 0.02}
            assert set(got) <= set(fixed) and set(got) == set(fixed) & low
            common = [h for h in got if abs(fixed[h]) > 1.0]
            ratio = np.array([got[h] / fixed[h] for h in common])
            np.testing.assert_allclose(np.median(ratio), 1.0 / factor, rtol=1e-3)
            assert np.mean(np.abs(ratio * factor - 1.0) < 1e-3) > 0.95
        assert (tmp_path / "run.mtz").is_file()
        # the --cfg job node shown on the page
        rc, out, _ = _run(scale_main, [inputs["run_process.h5"], "partiality=my_model",
                                       "--cfg", "job"])
        shown = OmegaConf.create(_blocks(text, "yaml")[1])
        assert OmegaConf.create(out).partiality == shown.partiality
        # --config-dir instead of the environment variable; -P lists the new option
        monkeypatch.delenv("JFX_CONFIG_PATH")
        rc, _, err = _run(scale_main, [inputs["run_process.h5"], "-P", "my_model", "--cfg",
                                       "job"])
        assert rc == 2 and "invalid choice: 'my_model'" in err
        rc, out, _ = _run(scale_main, [inputs["run_process.h5"], "--config-dir", "my_conf",
                                       "-P", "my_model", "--cfg", "job"])
        assert rc == 0 and "my_partiality.ScaledPartiality" in out
    finally:
        sys.modules.pop("my_partiality", None)


def test_a_target_of_the_wrong_interface_is_one_line(tmp_path, merged_run, monkeypatch):
    d = tmp_path / "conf2" / "partiality"
    d.mkdir(parents=True)
    (d / "wrong.yaml").write_text("_target_: jfx.scale.likelihood.NormalLikelihood\n")
    run_h5, _ = merged_run
    rc, _, err = _run(scale_main, [f"{run_h5}_process.h5", "--config-dir",
                                   str(tmp_path / "conf2"), "-P", "wrong", "-o",
                                   str(tmp_path / "x")])
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "is not a jfx.scale.base.PartialityModel" in err


@pytest.mark.parametrize("model", ["fixed", "rot", "unity"])
def test_builtin_models_name_themselves(merged_run, tmp_path, model):
    run_h5, _ = merged_run
    rc, _, err = _run(scale_main, [f"{run_h5}_process.h5", "-P", model, "-o",
                                   str(tmp_path / model)])
    assert rc == 0 and f"partiality {model}," in err
