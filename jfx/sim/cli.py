"""``jfx-simulate``: write a simulated Jungfraujoch data set + its ground truth.

    jfx-simulate --preset lyso_rotation -o out/lyso [--n-images N] [--layout legacy|vds|single]
                 [--codec bslz4|bszstd|none] [--dtype int32|int16|uint16|uint32] [--modules 1|2|8]
                 [--seed S] [--model file.pdb] [--no-noise] [--set key=value ...]
                 [--profile gaussian|lorentzian] [--mosaicity DEG] [--domain-size A |
                 --domain-sigma INV_A] [--bandwidth FWHM] [--divergence DEG]
                 [--cell-spread REL] [--scale-spread SIGMA]

Writes ``<out>_master.h5`` (+ data files, via :func:`jfx.io.jfjoch_writer.write_jungfraujoch`)
and ``<out>_truth.h5`` (:mod:`jfx.io.truth`); progress (images/s) goes to stderr and the
paths written to stdout. Bad options: one-line message on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from jfx.io.errors import InputError, ProcessingError
from jfx.physics.partiality import STILL_PROFILES


PROG = "jfx-simulate"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    from jfx.sim.presets import PRESETS

    p = _Parser(prog=PROG, description="Simulate Jungfraujoch (JUNGFRAU) data with ground truth.")
    p.add_argument("--preset", default="lyso_rotation",
                   help=f"one of: {', '.join(PRESETS)} (default: lyso_rotation; "
                        "--list-presets describes them)")
    p.add_argument("-o", "--output", default=None, help="output prefix (default: the preset name)")
    p.add_argument("--n-images", type=int, default=None, metavar="N",
                   help="number of images (default: the preset's)")
    p.add_argument("--layout", choices=("legacy", "vds", "single"), default="legacy",
                   help="file layout: legacy (master + data files linked by external links), "
                        "vds (virtual dataset over the data files) or single (images in the "
                        "master) (default: legacy)")
    p.add_argument("--codec", choices=("bslz4", "bszstd", "none"), default="bslz4",
                   help="image compression: bitshuffle+LZ4, bitshuffle+zstd or none "
                        "(default: bslz4)")
    p.add_argument("--dtype", choices=("int32", "int16", "uint16", "uint32"), default=None,
                   help="pixel type (default: the preset's)")
    p.add_argument("--modules", type=int, default=None,
                   help="JUNGFRAU modules: 1, 2 (1M), 8 (4M) (default: the preset's)")
    p.add_argument("--images-per-file", type=int, default=1000, metavar="N",
                   help="images per data file, legacy and vds layouts (default: 1000)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed: crystal orientation, structure, noise (default: the "
                        "preset's; the same seed gives the same data)")
    p.add_argument("--model", default=None, help="PDB/mmCIF model for the structure factors")
    p.add_argument("--no-noise", action="store_true",
                   help="expected counts (rounded), no Poisson noise")
    st = p.add_argument_group("stills partiality and crystal spread (docs/simulator.md)")
    st.add_argument("--profile", choices=STILL_PROFILES, default=None,
                    help="rocking-curve shape: gaussian (default) or the Lorentzian of the same "
                         "FWHM (partiality_profile)")
    st.add_argument("--mosaicity", type=float, default=None, metavar="DEG",
                    help="mosaic spread sigma_M, deg (mosaicity_deg)")
    dom = st.add_mutually_exclusive_group()
    dom.add_argument("--domain-size", type=float, default=None, metavar="A",
                     help="mosaic domain size D (A): domain term sigma_0 = 1/D")
    dom.add_argument("--domain-sigma", type=float, default=None, metavar="INV_A",
                     help="domain term sigma_0 (1/A) directly (domain_sigma_invA)")
    st.add_argument("--bandwidth", type=float, default=None, metavar="FWHM",
                    help="relative bandwidth dlambda/lambda FWHM (bandwidth_fwhm)")
    st.add_argument("--divergence", type=float, default=None, metavar="DEG",
                    help="beam divergence sigma per axis, deg (divergence_deg)")
    st.add_argument("--cell-spread", type=float, default=None, metavar="REL",
                    help="per-crystal isotropic cell change, relative sigma (cell_spread)")
    st.add_argument("--scale-spread", type=float, default=None, metavar="SIGMA",
                    help="per-image log-normal scale, sigma of ln g (image_scale_sigma)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   nargs="+", help="override any preset parameter (see docs/simulator.md)")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def _preset_from_args(args):
    from jfx.sim.presets import apply_overrides, get_preset

    preset = get_preset(args.preset)
    ov: dict = {}
    if args.n_images is not None:
        ov["n_images"] = args.n_images
    if args.dtype is not None:
        ov["dtype"] = args.dtype
    if args.modules is not None:
        ov["modules"] = args.modules
    if args.seed is not None:
        ov["seed"] = args.seed
    if args.model is not None:
        if not Path(args.model).is_file():
            raise InputError(f"model file not found: {args.model}")
        ov["model"] = args.model
    if args.no_noise:
        ov["noise"] = False
    if args.domain_size is not None:
        if not (math.isfinite(args.domain_size) and args.domain_size > 0):
            raise InputError(f"--domain-size must be > 0 A, got {args.domain_size!r}")
        ov["domain_sigma_invA"] = 1.0 / args.domain_size
    for flag, key in (("profile", "partiality_profile"), ("mosaicity", "mosaicity_deg"),
                      ("domain_sigma", "domain_sigma_invA"), ("bandwidth", "bandwidth_fwhm"),
                      ("divergence", "divergence_deg"), ("cell_spread", "cell_spread"),
                      ("scale_spread", "image_scale_sigma")):
        v = getattr(args, flag)
        if v is not None:
            ov[key] = v
    preset = apply_overrides(preset, ov)
    flat = [tok for group in args.overrides for tok in group]
    if flat:
        preset = apply_overrides(preset, flat)
    return preset


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        from jfx.sim.presets import PRESETS

        for name, pr in PRESETS.items():
            print(f"{name}: {pr.kind}, {pr.n_images} images, cell {pr.cell}, SG {pr.space_group}")
        return 0
    try:
        preset = _preset_from_args(args)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.images_per_file < 1:
        raise InputError("--images-per-file must be ≥ 1")
    out = Path(args.output if args.output else preset.name)
    try:
        from jfx.io.jfjoch_writer import write_jungfraujoch
    except ImportError as exc:  # pragma: no cover - depends on the parallel helper
        raise ProcessingError(f"simulate: Jungfraujoch writer unavailable ({exc})") from None
    from jfx.io.progress import Progress
    from jfx.io.truth import Truth, write_truth
    from jfx.sim import simulate

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))  # noqa: E731
    t0 = time.perf_counter()
    try:
        exp = simulate.build_experiment(preset)
    except ValueError as exc:
        raise InputError(str(exc).splitlines()[0]) from None
    log(f"{PROG}: {preset.name}: {preset.kind}, {len(exp.sf.hkl)} reflections to "
        f"{preset.d_min_A} Å, detector {exp.layout.shape[1]}x{exp.layout.shape[0]} px "
        f"({time.perf_counter() - t0:.1f} s)")
    obs = simulate.plan_observations(exp)
    log(f"{PROG}: {len(obs['image'])} reflection observations on {preset.n_images} images")
    truth = Truth(**simulate.truth_content(exp, obs))

    prog = Progress("simulate", preset.n_images, enabled=not args.quiet)

    def frames():
        for fr in simulate.iter_frames(exp, obs):
            yield fr
            prog.update(1)

    rotation = exp.is_rotation
    try:
        master = write_jungfraujoch(
            out, frames(), n_images=preset.n_images, geometry=exp.geometry, dtype=preset.dtype,
            layout=args.layout, codec=args.codec, images_per_file=args.images_per_file,
            pixel_mask=exp.layout.pixel_mask, saturation_value=exp.saturation_value,
            unit_cell=tuple(float(v) for v in exp.sf.cell) if preset.write_cell else None,
            space_group=int(exp.sf.space_group) if preset.write_cell else None,
            bandwidth_fwhm=preset.bandwidth_fwhm if preset.bandwidth_fwhm > 0 else None,
            sample_name=f"jfx simulation ({preset.name})",
            detector_description=exp.layout.description,
        )
    except (ValueError, OSError) as exc:
        prog.close(success=False)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProcessingError(f"simulate: writing {out}_master.h5 failed: {msg}") from None
    except BaseException:
        prog.close(success=False)
        raise
    prog.close()
    try:
        truth_path = write_truth(Path(f"{out}_truth.h5"), truth)
    except OSError as exc:
        raise ProcessingError(f"simulate: writing {out}_truth.h5 failed: {exc}") from None
    print(f"wrote {master}")
    print(f"wrote {truth_path}")
    log(f"{PROG}: {'rotation' if rotation else 'stills'} done in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns/exits with 0, 1 (processing) or 2 (bad input)."""
    try:
        rc = run(argv)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        rc = 2
    except ProcessingError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        rc = 1
    if __name__ == "__main__" or argv is None:
        sys.exit(rc)
    return rc


if __name__ == "__main__":
    main()


__all__ = ["main", "run", "build_parser"]
