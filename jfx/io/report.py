"""Merging statistics for people: the console table and a self-contained HTML report
(inline SVG plots, no external assets).

:func:`format_table` is the console table (``jfjoch_scale``, ``-M``).
:func:`write_report_html` writes one HTML file: a header (dataset, program, date, space group,
cell, partiality model, images), three plots against resolution — CC1/2 (with CC_anom / CC_ref
when present), ⟨I/σ⟩ and completeness (with the anomalous completeness under ``-A``) — and under
``-A`` a fourth, ⟨|ΔI|/σ(ΔI)⟩ against the noise level √(2/π); the per-image plots a DIALS user looks at first (scale,
B factor with ``-B``, CC of each image to the merged data, rejected images marked) and the
statistics table.  The resolution axis is 1/d² (Å⁻²), so equal-volume shells are spread
evenly, labelled in d (Å).  The plots are hand-written SVG (matplotlib is not a dependency).
The file is written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jfx.io.output_set import write_one
from jfx.models.merged import INT_COLUMNS, WILSON_D_MAX_A, MergingStatistics

_W, _H = 480, 300
_ML, _MR, _MT, _MB = 62, 16, 30, 48  # margins: left, right, top, bottom
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
NOISE_DANO_OVER_SIGMA = math.sqrt(2.0 / math.pi)
"""⟨|ΔI|/σ(ΔI)⟩ of pure noise (ΔI ~ N(0, σ²)): the reference line of the anomalous plot."""


def _fmt(v: float, spec: str, width: int) -> str:
    if v is None or not np.isfinite(v):
        return "-".rjust(width)
    return format(v, spec).rjust(width)


def format_table(stats: MergingStatistics) -> str:
    """Console table of ``stats``: one line per shell, an overall line and the Wilson B; in
    anomalous mode a second table "Anomalous statistics" (as AIMLESS prints one) with the
    Bijvoet pairs, anomalous completeness and multiplicity, CC_anom, R_anom and
    ⟨|ΔI|/σ(ΔI)⟩ per shell.

    Percentages: completeness, R_meas, CC1/2, CC*, CC_ref, anomalous completeness, CC_anom
    and R_anom are printed in %.
    """
    head = ["     d range (A)", "  N_obs", " N_uniq", "  mult", " compl%", "   I/sig",
            " Rmeas%", " CC1/2%", "  CC*%"]
    if stats.has_reference:
        head.append(" CCref%")
    lines = [" ".join(head)]
    for r in range(stats.n_shells + 1):
        if r == stats.n_shells:
            lines.append("-" * len(lines[0]))
            rng = "overall"
        else:
            rng = f"{stats.d_max[r]:7.2f} -{stats.d_min[r]:6.2f}"
        row = [rng.rjust(16),
               f"{int(stats.n_obs[r]):7d}", f"{int(stats.n_unique[r]):7d}",
               _fmt(stats.multiplicity[r], ".2f", 6),
               _fmt(100 * stats.completeness[r], ".1f", 7),
               _fmt(stats.mean_i_over_sigma[r], ".2f", 8),
               _fmt(100 * stats.r_meas[r], ".1f", 7),
               _fmt(100 * stats.cc_half[r], ".1f", 7),
               _fmt(100 * stats.cc_star[r], ".1f", 6)]
        if stats.has_reference:
            row.append(_fmt(100 * stats.cc_ref[r], ".1f", 7))
        lines.append(" ".join(row))
    if stats.anomalous:
        lines += _anomalous_table(stats)
    wb = stats.wilson_b_A2
    lines.append("Wilson B: " + (f"{wb:.2f} A^2" if np.isfinite(wb) else "not determined")
                 + f" (ln<I> vs 1/d^2 over d < {WILSON_D_MAX_A} A)")
    if stats.n_rejected_images:
        lines.append(f"Rejected images: {stats.n_rejected_images} (counted in N_obs only)")
    sd = stats.suggested_d_min_A
    lines.append("Suggested high-resolution limit: "
                 + (f"{sd:.2f} A" if np.isfinite(sd) else "not determined")
                 + " (tanh fit of CC1/2 vs 1/d^2 at CC1/2 = 0.3, as dials.estimate_resolution;"
                 " advisory, --scaling-high-resolution sets the cut)")
    return "\n".join(lines)


def _shell_label(stats: MergingStatistics, r: int) -> str:
    if r == stats.n_shells:
        return "overall".rjust(16)
    return f"{stats.d_max[r]:7.2f} -{stats.d_min[r]:6.2f}".rjust(16)


def _anomalous_table(stats: MergingStatistics) -> list[str]:
    """The "Anomalous statistics" lines under the main table (``-A``): Bijvoet pairs,
    anomalous completeness and multiplicity, CC_anom, R_anom and ⟨|ΔI|/σ(ΔI)⟩."""
    head = ["     d range (A)", " N_pairs", " AnoCmp%", " AnoMult", " CCano%", " Ranom%",
            " <|dI|/s(dI)>"]
    title = "Anomalous statistics (acentric Bijvoet pairs; noise alone: <|dI|/s(dI)> = 0.80)"
    lines = ["", title, " ".join(head)]
    for r in range(stats.n_shells + 1):
        if r == stats.n_shells:
            lines.append("-" * len(lines[2]))
        lines.append(" ".join([
            _shell_label(stats, r), f"{int(stats.n_anom_pairs[r]):8d}",
            _fmt(100 * stats.anom_completeness[r], ".1f", 8),
            _fmt(stats.anom_multiplicity[r], ".2f", 8),
            _fmt(100 * stats.cc_anom[r], ".1f", 7),
            _fmt(100 * stats.r_anom[r], ".1f", 7),
            _fmt(stats.dano_over_sigma[r], ".3f", 13)]))
    return lines


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _canvas(title: str, x0: float, x1: float, y0: float, y1: float):
    """The frame of one plot: SVG header, title, plot box and y ticks; returns the lines so far
    and the data → pixel maps ``px``, ``py`` and the plot width/height."""
    pw, ph = _W - _ML - _MR, _H - _MT - _MB

    def px(v):
        return _ML + (v - x0) / (x1 - x0) * pw

    def py(v):
        return _MT + ph - (v - y0) / (y1 - y0) * ph

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(title)}">'),
           f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="white"/>',
           (f'<text x="{_W / 2:.1f}" y="18" text-anchor="middle" font-size="14" '
            f'font-family="sans-serif">{html.escape(title)}</text>'),
           f'<rect x="{_ML}" y="{_MT}" width="{pw}" height="{ph}" fill="none" stroke="black"/>']
    for t in _nice_ticks(y0, y1):
        yy = py(t)
        out.append(f'<line x1="{_ML - 4}" y1="{yy:.1f}" x2="{_ML + pw}" y2="{yy:.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{_ML - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11" '
                   f'font-family="sans-serif">{t:g}</text>')
    return out, px, py, pw, ph


def _x_tick(xx: float, ph: float, label: str) -> list[str]:
    return [(f'<line x1="{xx:.1f}" y1="{_MT + ph}" x2="{xx:.1f}" y2="{_MT + ph + 4}" '
             f'stroke="black"/>'),
            (f'<text x="{xx:.1f}" y="{_MT + ph + 16}" text-anchor="middle" '
             f'font-size="11" font-family="sans-serif">{label}</text>')]


def _axis_labels(x_label: str, y_label: str, pw: float, ph: float) -> list[str]:
    return [(f'<text x="{_ML + pw / 2:.1f}" y="{_H - 10}" text-anchor="middle" font-size="12" '
             f'font-family="sans-serif">{html.escape(x_label)}</text>'),
            (f'<text x="14" y="{_MT + ph / 2:.1f}" text-anchor="middle" font-size="12" '
             f'font-family="sans-serif" transform="rotate(-90 14 {_MT + ph / 2:.1f})">'
             f'{html.escape(y_label)}</text>')]


def _legend(k: int, label: str, col: str, pw: float, width: int = 90) -> list[str]:
    ly = _MT + 14 + 16 * k
    return [(f'<line x1="{_ML + pw - width}" y1="{ly - 4}" x2="{_ML + pw - width + 20}" '
             f'y2="{ly - 4}" stroke="{col}" stroke-width="2"/>'),
            (f'<text x="{_ML + pw - width + 24}" y="{ly}" font-size="11" '
             f'font-family="sans-serif">{html.escape(label)}</text>')]


def svg_plot(x_inv_d2: np.ndarray, series: list[tuple[str, np.ndarray]], title: str,
             y_label: str, y_range: tuple[float | None, float | None] = (None, None)) -> str:
    """One SVG line plot of ``series`` (label, y values) against 1/d² with d tick labels.

    Non-finite points are skipped (the line breaks there).
    """
    x = np.asarray(x_inv_d2, np.float64)
    ys = [np.asarray(y, np.float64) for _, y in series]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.zeros(0)
    y0, y1 = y_range
    if y0 is None:
        y0 = float(min(0.0, finite.min())) if finite.size else 0.0
    if y1 is None:
        y1 = float(finite.max()) if finite.size else 1.0
    if finite.size:
        y0 = min(y0, float(finite.min()))
        y1 = max(y1, float(finite.max()))
    if y1 <= y0:
        y1 = y0 + 1.0
    x0, x1 = 0.0, float(np.nanmax(x)) * 1.05 if x.size and np.isfinite(x).any() else 1.0
    out, px, py, pw, ph = _canvas(title, x0, x1, y0, y1)
    # x ticks at round d values
    d_candidates = [50, 20, 10, 8, 6, 5, 4, 3.5, 3, 2.5, 2.2, 2, 1.8, 1.6, 1.5, 1.4, 1.3, 1.2,
                    1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    last = -1e9
    for d in d_candidates:
        v = 1.0 / d ** 2
        if v > x1:
            break
        xx = px(v)
        if xx - last < 34:
            continue
        last = xx
        out += _x_tick(xx, ph, f"{d:g}")
    out += _axis_labels("resolution d (Å), axis linear in 1/d²", y_label, pw, ph)
    for k, ((label, _), y) in enumerate(zip(series, ys)):
        col = _COLOURS[k % len(_COLOURS)]
        seg: list[str] = []
        segments = []
        for xv, yv in zip(x, y):
            if np.isfinite(xv) and np.isfinite(yv):
                seg.append(f"{px(xv):.1f},{py(yv):.1f}")
                out.append(f'<circle cx="{px(xv):.1f}" cy="{py(yv):.1f}" r="3" fill="{col}"/>')
            elif seg:
                segments.append(seg)
                seg = []
        if seg:
            segments.append(seg)
        for s in segments:
            out.append(f'<polyline fill="none" stroke="{col}" stroke-width="2" '
                       f'points="{" ".join(s)}"/>')
        out += _legend(k, label, col, pw)
    out.append("</svg>")
    return "\n".join(out)


@dataclasses.dataclass(frozen=True)
class ReportHeader:
    """What the report is about (shown at its top).

    Attributes:
        datasets: input files (master for ``jfjoch_process``, ``_process.h5`` for
            ``jfjoch_scale``).
        space_group: merging space group number; cell: (a, b, c, α, β, γ) in Å / degrees.
        program: e.g. ``"jfx 0.1.0 (jfjoch_process)"``; date: ISO 8601 with zone.
        partiality_model: the model that ran; n_images: images that entered scaling.
    """

    datasets: tuple[str, ...]
    space_group: int | None
    cell: tuple[float, ...] | None
    program: str
    date: str
    partiality_model: str | None = None
    n_images: int | None = None


def report_header(result: Any, datasets: Sequence[str], program: str,
                  date: str | None = None) -> ReportHeader:
    """The :class:`ReportHeader` of a :class:`jfx.scale.scaling.ScalingResult`; ``date``
    defaults to now (local time with its zone)."""
    cell = getattr(result, "cell", None)
    images = getattr(result, "images", None) or {}
    return ReportHeader(
        datasets=tuple(str(d) for d in datasets),
        space_group=int(result.space_group) if getattr(result, "space_group", None) else None,
        cell=tuple(float(v) for v in np.asarray(cell).reshape(-1)) if cell is not None else None,
        program=program,
        date=date or datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        partiality_model=getattr(result, "partiality_model", None),
        n_images=len(images["scale"]) if "scale" in images else None)


def _space_group_name(number: int | None) -> str:
    if number is None:
        return "unknown"
    try:
        import gemmi

        return f"{gemmi.find_spacegroup_by_number(int(number)).hm} ({int(number)})"
    except Exception:  # noqa: BLE001  (a name is only decoration)
        return str(number)


def _header_html(h: ReportHeader) -> str:
    cell = ("–" if h.cell is None else
            "a, b, c = " + ", ".join(f"{v:.3f}" for v in h.cell[:3]) + " Å; α, β, γ = "
            + ", ".join(f"{v:.2f}" for v in h.cell[3:]) + "°")
    rows = [("Dataset" + ("s" if len(h.datasets) > 1 else ""),
             "<br>".join(html.escape(d) for d in h.datasets) or "–"),
            ("Space group", html.escape(_space_group_name(h.space_group))),
            ("Unit cell", html.escape(cell)),
            ("Partiality model", html.escape(h.partiality_model or "–")),
            ("Images scaled", "–" if h.n_images is None else str(h.n_images)),
            ("Program", html.escape(h.program)), ("Date", html.escape(h.date))]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="header">{body}</table>'


MAX_IMAGE_POINTS = 2000
"""Per-image plots with more images show the median of consecutive blocks of images (one point
per block, at most this many points) so the HTML stays small for 10⁵ stills."""


def _image_axis(images: Mapping[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """x values of the per-image plots: the image number (one run) or the position in the
    concatenated runs (several), with its label."""
    img = np.asarray(images["image"], np.float64)
    run = np.asarray(images.get("run", np.zeros(len(img))))
    if len(np.unique(run)) <= 1:
        return img, "image number"
    return np.arange(len(img), dtype=np.float64), "image (runs concatenated)"


def _blocked(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Medians of consecutive blocks when there are more than :data:`MAX_IMAGE_POINTS`."""
    n = len(x)
    if n <= MAX_IMAGE_POINTS:
        return x, y
    edges = np.linspace(0, n, MAX_IMAGE_POINTS + 1).astype(int)
    xb = np.array([np.median(x[a:b]) for a, b in itertools.pairwise(edges)])
    yb = np.array([np.nanmedian(y[a:b]) if np.isfinite(y[a:b]).any() else np.nan
                   for a, b in itertools.pairwise(edges)])
    return xb, yb


def svg_xy_plot(x: np.ndarray, series: list[tuple[str, np.ndarray]], title: str,
                x_label: str, y_label: str, marks: np.ndarray | None = None,
                y_range: tuple[float | None, float | None] = (None, None)) -> str:
    """One SVG plot of ``series`` (label, y values) against plain ``x`` (e.g. image number).

    ``marks`` (bool, same length as ``x``): points drawn as red crosses on the first series
    (rejected images).  Points are drawn for up to 300 x values, a line only beyond.
    Non-finite points are skipped.
    """
    x = np.asarray(x, np.float64)
    ys = [np.asarray(y, np.float64) for _, y in series]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.zeros(0)
    y0, y1 = y_range
    if y0 is None:
        y0 = float(finite.min()) if finite.size else 0.0
    if y1 is None:
        y1 = float(finite.max()) if finite.size else 1.0
    if finite.size:
        y0, y1 = min(y0, float(finite.min())), max(y1, float(finite.max()))
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y0 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    xf = x[np.isfinite(x)]
    x0, x1 = (float(xf.min()), float(xf.max())) if xf.size else (0.0, 1.0)
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x0 + 0.5
    out, px, py, pw, ph = _canvas(title, x0, x1, y0, y1)
    for t in _nice_ticks(x0, x1):
        out += _x_tick(px(t), ph, f"{t:g}")
    out += _axis_labels(x_label, y_label, pw, ph)
    dots = len(x) <= 300
    for k, ((label, _), y) in enumerate(zip(series, ys)):
        col = _COLOURS[k % len(_COLOURS)]
        ok = np.isfinite(x) & np.isfinite(y)
        pts = [f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x[ok], y[ok])]
        if pts:
            out.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.5" '
                       f'points="{" ".join(pts)}"/>')
        if dots:
            out.extend(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2.5" fill="{col}"/>'
                       for a, b in zip(x[ok], y[ok]))
        if k == 0 and marks is not None:
            m = ok & np.asarray(marks, bool)
            out.extend(f'<path class="rejected" d="M{px(a) - 4:.1f},{py(b) - 4:.1f} l8,8 '
                       f'm0,-8 l-8,8" stroke="#d62728" stroke-width="2"/>'
                       for a, b in zip(x[m], y[m]))
        out += _legend(k, label, col, pw, width=110)
    out.append("</svg>")
    return "\n".join(out)


def image_plots(images: Mapping[str, np.ndarray]) -> list[str]:
    """The per-image SVG plots of scaling results ``images`` (``image``, ``scale``, ``cc``,
    optional ``run``, ``bfactor``, ``rejected``): scale, B factor (only when refined, i.e.
    not all zero) and CC of each image to the merged data against the image."""
    if not images or "image" not in images or len(images["image"]) == 0:
        return []
    x, xlabel = _image_axis(images)
    rej = np.asarray(images.get("rejected", np.zeros(len(x))), bool)
    blocked = len(x) > MAX_IMAGE_POINTS
    if blocked:
        xlabel += f" (median of blocks of ~{len(x) / MAX_IMAGE_POINTS:.0f} images)"
    plots = []
    todo = [("scale", "Scale factor per image", "scale G")]
    b = np.asarray(images.get("bfactor", np.zeros(0)), np.float64)
    if b.size and np.any(np.isfinite(b) & (b != 0)):
        todo.append(("bfactor", "B factor per image", "B (Å²)"))
    todo.append(("cc", "CC of each image to the merged intensities", "CC"))
    for key, title, ylab in todo:
        if key not in images:
            continue
        y = np.asarray(images[key], np.float64)
        xs, ys = _blocked(x, y)
        plots.append(svg_xy_plot(xs, [(key, ys)], title, xlabel, ylab,
                                 marks=None if blocked else rej,
                                 y_range=(None, 1.0) if key == "cc" else (None, None)))
    return plots


def _table_html(stats: MergingStatistics) -> str:
    cols = stats.columns()
    pct = {"completeness", "cc_half", "cc_star", "r_meas", "r_pim", "cc_anom", "cc_ref",
           "anom_completeness", "r_anom"}
    head = "".join(f"<th>{html.escape(c)}{' (%)' if c in pct else ''}</th>" for c in cols)
    rows = []
    for r in range(stats.n_shells + 1):
        cells = []
        for c in cols:
            v = float(getattr(stats, c)[r])
            if c in INT_COLUMNS:
                s = f"{int(v)}"
            elif not math.isfinite(v):
                s = "–"
            elif c in pct:
                s = f"{100 * v:.1f}"
            else:
                s = f"{v:.2f}"
            cells.append(f"<td>{s}</td>")
        cls = ' class="overall"' if r == stats.n_shells else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def report_html(stats: MergingStatistics, title: str = "jfx merging statistics", *,
                header: ReportHeader | None = None,
                images: Mapping[str, np.ndarray] | None = None) -> str:
    """The report as an HTML string (see :func:`write_report_html`)."""
    ns = stats.n_shells
    dmax, dmin = stats.d_max[:ns], stats.d_min[:ns]
    x = 0.5 * (1.0 / dmax ** 2 + 1.0 / dmin ** 2)
    cc = [("CC1/2", 100 * stats.cc_half[:ns])]
    if stats.anomalous:
        cc.append(("CC_anom", 100 * stats.cc_anom[:ns]))
    if stats.has_reference:
        cc.append(("CC_ref", 100 * stats.cc_ref[:ns]))
    compl = [("completeness", 100 * stats.completeness[:ns])]
    if stats.anomalous:
        compl.append(("anomalous (pairs)", 100 * stats.anom_completeness[:ns]))
    plots = [svg_plot(x, cc, "Correlation coefficients", "CC (%)", (0.0, 100.0)),
             svg_plot(x, [("<I/σ>", stats.mean_i_over_sigma[:ns])], "Mean I/σ(I)", "<I/σ>",
                      (0.0, None)),
             svg_plot(x, compl, "Completeness", "completeness (%)", (0.0, 100.0))]
    if stats.anomalous:
        plots.append(svg_plot(
            x, [("<|ΔI|/σ(ΔI)>", stats.dano_over_sigma[:ns]),
                ("noise: √(2/π)", np.full(ns, NOISE_DANO_OVER_SIGMA))],
            "Anomalous signal", "<|ΔI|/σ(ΔI)>", (0.0, None)))
    wb = stats.wilson_b_A2
    wtxt = f"{wb:.2f} Å²" if math.isfinite(wb) else "not determined"
    css = ("body{font-family:sans-serif;margin:1.5em;} table{border-collapse:collapse;"
           "font-size:13px;} td,th{border:1px solid #bbb;padding:2px 6px;text-align:right;}"
           " tr.overall{font-weight:bold;background:#eef;} .plots svg{margin:4px;"
           "border:1px solid #ccc;} pre{font-size:12px;} table.header th{text-align:left;"
           "background:#f4f4f4;} table.header td{text-align:left;}")
    iplots = image_plots(images) if images is not None else []
    n_rej = int(np.count_nonzero(np.asarray(images.get("rejected", ()), bool))) \
        if images is not None else 0
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{css}</style>", "</head>", "<body>",
        f"<h1>{html.escape(title)}</h1>",
        *([_header_html(header)] if header is not None else []),
        f"<p>Mode: {'anomalous (Friedel pairs separate)' if stats.anomalous else 'Friedel pairs merged'}"
        f"; {ns} equal-volume resolution shells; Wilson B: {html.escape(wtxt)}"
        + (f"; rejected images: {stats.n_rejected_images}" if stats.n_rejected_images else "")
        + "</p>",
        "<h2>Against resolution</h2>", '<div class="plots">', *plots, "</div>",
        *(["<h2>Per image</h2>",
           f"<p>{len(images['image'])} images"
           + (f"; {n_rej} rejected (red crosses)" if n_rej else "") + "</p>",
           '<div class="plots">', *iplots, "</div>"] if iplots else []),
        "<h2>Statistics per resolution shell</h2>", _table_html(stats),
        "<h2>Console table</h2>", f"<pre>{html.escape(format_table(stats))}</pre>",
        "</body>", "</html>", ""])


def write_report_html(path: str | os.PathLike, stats: MergingStatistics,
                      title: str = "jfx merging statistics", *,
                      header: ReportHeader | None = None,
                      images: Mapping[str, np.ndarray] | None = None,
                      outputs=None) -> Path:
    """Write the self-contained HTML report of ``stats`` to ``path`` (atomically; with
    ``outputs``, a :class:`jfx.io.output_set.OutputSet`, as part of that set), with the
    ``header`` and the per-image plots of ``images`` when given."""
    path = Path(path)
    text = report_html(stats, title, header=header, images=images)
    if outputs is not None:
        outputs.add(path, text)
    else:
        write_one(path, text)
    return path
