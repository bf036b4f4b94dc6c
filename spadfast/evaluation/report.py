"""``spadfast evaluate ... --report DIR``: a self-contained HTML report of an evaluation (open it from disk).

``DIR`` holds::

    DIR/index.html          summary table, metric plots, training curves (with --run), one row per case, worst first
    DIR/report.json         the evaluation report the page was built from (``evaluate_folders``'s output)
    DIR/plots/metrics.png   histograms of Dice / IoU / HD95 (per-class box plots when the report has classes)
    DIR/plots/curves.png    loss and validation Dice with the PaS schedule (only with ``run_dir``)
    DIR/thumbs/<i>_{img,gt,pred,unc}.png   per-case thumbnails (longest side <= ``thumb_size`` px)
    DIR/.spadfast-report    marker: DIR is a spadfast report and may be replaced

The page needs no server and no network: CSS and the pager script are inline, images are relative links with
``loading="lazy"``, and case rows come in pages of ``page_size`` (one page shown at a time; all of them without
JavaScript). Metric cells carry the exact value in ``data-value`` (``repr`` of the float; ``inf``/``nan`` spelled
so), so tools can read the page back.

Writing is atomic at the folder level: the report is built in a temporary folder beside ``DIR`` and swapped in by
renames, so ``DIR`` is never half-written. An existing ``DIR`` is written only when it is empty or holds the marker
file (anything else is a ``ValueError`` naming it), and then only the report's own files are replaced: the user's
other files in it are kept (:mod:`spadfast.evaluation.report_folder`).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..ops.checks import check_int
from .report_cases import case_files, thumbnails
from .report_folder import MARKER, check_report_dir, swap_in

__all__ = ["write_report", "add_arguments", "check_arguments", "main"]


# ----------------------------------------------------------------------------------------------------- checks


def _columns(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(key, label, arrow)`` of each registered metric the report holds (:data:`spadfast.evaluation.metrics.METRICS`)."""
    from .metrics import METRICS

    mean = report.get("mean") if isinstance(report.get("mean"), dict) else {}
    return [(key, m.label, m.arrow) for key, m in METRICS.items() if key in mean or key in ("dice", "iou", "hd95")]


def _check_report(report: object) -> list[dict[str, Any]]:
    if not isinstance(report, dict) or not isinstance(report.get("cases"), list) or "mean" not in report:
        raise ValueError("`report` must be evaluate_folders' output: a dict with 'cases' (a list) and 'mean'")
    for i, case in enumerate(report["cases"]):
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            raise ValueError(f"`report['cases'][{i}]` must be a dict with a 'name'")
        for key, _, _ in _columns(report):
            if not isinstance(case.get(key), (int, float)):
                raise ValueError(f"`report['cases'][{i}]` ({case['name']!r}) lacks a number for {key!r}")
    if not report["cases"]:
        raise ValueError("`report` has no cases")
    return report["cases"]


# ------------------------------------------------------------------------------------------------------- HTML


def _fmt(v: float, digits: int = 4) -> str:
    if math.isnan(v):
        return "n/a"
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def _value_attr(v: float) -> str:
    """Exact value for ``data-value``: ``repr`` of the float (``inf``, ``-inf``, ``nan`` as such)."""
    return repr(float(v))


def _cell(v: float, digits: int = 4, extra: str = "") -> str:
    return f'<td class="num{extra}" data-value="{_value_attr(v)}">{_fmt(v, digits)}</td>'


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n_inf": 0}
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "n_inf": int(np.isinf(a).sum())}


def _summary_rows(report: dict[str, Any]) -> list[str]:
    """Rows ``scope | metric | mean | median | min | max``: "all" first, then each class when present."""
    cases = report["cases"]
    scopes: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [("all", report["mean"], cases)]
    classes = sorted({k for c in cases for k in c.get("per_class", {})}, key=lambda k: (len(k), k))
    for k in classes:
        mean_k = report["mean"].get("per_class", {}).get(k)
        per = [c["per_class"][k] for c in cases if k in c.get("per_class", {})]
        if mean_k is None:  # no per-class mean in the JSON: the plain mean of the cases
            mean_k = {m: float(np.mean([p[m] for p in per])) for m, _, _ in _columns(report)}
        scopes.append((f"class {k}", mean_k, per))
    rows = []
    for scope, mean, per in scopes:
        for key, label, arrow in _columns(report):
            st = _stats([float(p[key]) for p in per])
            inf_note = f' <span class="note">({st["n_inf"]} inf)</span>' if st["n_inf"] else ""
            rows.append(
                f'<tr data-scope="{html.escape(scope)}" data-metric="{key}"><th>{html.escape(scope)}</th>'
                f"<th>{label} {arrow}{inf_note}</th>"
                + _cell(float(mean[key]), extra=" mean") + _cell(st["median"], extra=" median")
                + _cell(st["min"]) + _cell(st["max"]) + "</tr>"
            )
    return rows


def _worst_first(cases: list[dict[str, Any]]) -> list[int]:
    """Case indices by Dice ascending, then HD95 descending (inf first), then name."""
    def key(i: int) -> tuple[float, float, str]:
        c = cases[i]
        hd = float(c["hd95"])
        return (float(c["dice"]), -(hd if not math.isnan(hd) else math.inf), c["name"])

    return sorted(range(len(cases)), key=key)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b9c0cc;font-size:12px}main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:12px 16px;margin-bottom:16px}
h2{font-size:16px;margin:0 0 10px}table{border-collapse:collapse}
th,td{padding:3px 10px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:middle}
td.num{text-align:right;font-variant-numeric:tabular-nums}thead th{background:#f0f2f5;position:sticky;top:0}
.note{color:#8a93a3;font-weight:normal;font-size:12px}.plots img{max-width:100%;height:auto}
.cases td.thumb{padding:2px 4px}.cases img{display:block;image-rendering:pixelated;background:#000}
.bad{color:#b3261e;font-weight:600}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:12px;height:12px;vertical-align:-1px;margin-right:4px;border:1px solid #999}
.pager{margin:8px 0}.pager button{margin-right:4px;padding:2px 8px;cursor:pointer}
.pager button.on{background:#1d2330;color:#fff}.pc{font-size:11px;color:#5b6473}
.top{display:flex;flex-wrap:wrap;gap:0 16px;align-items:flex-start}.top section{flex:0 1 auto}
.top .plots img{height:190px;width:auto;max-width:none}.top #training img{height:250px}
.top .plots img.tall{height:360px}
.summary td,.summary th{padding:3px 8px}
"""

_JS = """
(function(){
  var pages=document.querySelectorAll('tbody.page'); if(pages.length<2) return;
  var bars=document.querySelectorAll('.pager');
  function show(k){
    pages.forEach(function(p,i){p.style.display=(i===k)?'':'none';});
    bars.forEach(function(bar){bar.querySelectorAll('button').forEach(function(b,i){
      b.className=(i===k)?'on':'';});});
    location.hash='page-'+(k+1);
  }
  bars.forEach(function(bar){
    pages.forEach(function(p,i){var b=document.createElement('button');b.type='button';
      b.textContent=p.getAttribute('data-label');b.onclick=function(){show(i);};bar.appendChild(b);});
  });
  var m=/^#page-(\\d+)$/.exec(location.hash); var k=m?Math.min(pages.length,Math.max(1,+m[1]))-1:0; show(k);
})();
"""


def _case_row(rank: int, case: dict[str, Any], thumbs: dict[str, str], size: tuple[int, int],
              show_image: bool, show_unc: bool, columns: list[str], note: str = "") -> str:
    name = html.escape(case["name"])
    h, w = size
    note_html = f'<br><span class="note">{html.escape(note)}</span>' if note else ""
    cells = [f'<td class="num">{rank}</td>', f'<td class="name">{name}{note_html}</td>']
    for key in columns:
        v = float(case[key])
        bad = " bad" if (key == "dice" and v < 0.5) or (key == "hd95" and math.isinf(v)) else ""
        cells.append(_cell(v, extra=bad))
    if case.get("per_class"):
        parts = [f"{html.escape(k)}: {_fmt(float(v['dice']), 3)}" for k, v in
                 sorted(case["per_class"].items(), key=lambda kv: (len(kv[0]), kv[0]))]
        cells.append(f'<td class="pc">{"<br>".join(parts)}</td>')

    def img(kind: str, alt: str) -> str:
        if kind not in thumbs:
            return '<td class="thumb"></td>'
        return (f'<td class="thumb"><img src="{html.escape(thumbs[kind])}" width="{w}" height="{h}" '
                f'loading="lazy" alt="{alt} {name}"></td>')

    if show_image:
        cells.append(img("img", "image"))
    cells += [img("gt", "ground truth"), img("pred", "prediction")]
    if show_unc:
        cells.append(img("unc", "uncertainty"))
    return f'<tr class="case" data-name="{name}">' + "".join(cells) + "</tr>"


def _page(report: dict[str, Any], rows_html: list[str], header_cells: list[str], meta: dict[str, str],
          plots: dict[str, str], curves_note: str, page_size: int) -> str:
    n = len(report["cases"])
    info = " · ".join(f"{html.escape(k)}: <code>{html.escape(v)}</code>" for k, v in meta.items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>spadfast report: {n} cases</title>", f"<style>{_CSS}</style>",
        "<noscript><style>tbody.page{display:table-row-group!important}</style></noscript>", "</head><body>",
        f'<header><h1>spadfast evaluation report — {n} cases</h1><p>{info}</p></header><main>',
        '<div class="top"><section id="summary"><h2>Summary</h2><table class="summary"><thead><tr><th>scope</th>'
        '<th>metric</th><th>mean</th><th>median</th><th>min</th><th>max</th></tr></thead><tbody>',
        *_summary_rows(report),
        "</tbody></table>",
        f'<p class="note">Dice and IoU of two empty masks are 1; HD95 ({html.escape(report.get("hd95_unit", "px"))})'
        " is<br>inf where exactly one mask is empty, and then<br>the mean is inf too. Click a plot for full size.</p>"
        "</section>",
    ]
    if "metrics" in plots:
        tall = ' class="tall"' if any(c.get("per_class") for c in report["cases"]) else ""
        parts += ['<section id="distributions" class="plots"><h2>Distributions</h2>',
                  f'<a href="{plots["metrics"]}"><img src="{plots["metrics"]}" alt="metric histograms"{tall}></a>',
                  "</section>"]
    if "curves" in plots or curves_note:
        parts.append('<section id="training" class="plots"><h2>Training</h2>')
        if "curves" in plots:
            parts.append(f'<a href="{plots["curves"]}"><img src="{plots["curves"]}" alt="training curves"></a>')
        if curves_note:
            parts.append(f'<p class="note">{curves_note}</p>')
        parts.append("</section>")
    parts.append("</div>")
    pages = [rows_html[i : i + page_size] for i in range(0, len(rows_html), page_size)]
    parts += [
        f'<section id="cases"><h2>Cases, worst first <span class="note">{n} cases'
        + (f", pages of {page_size}" if n > page_size else "") + "</span></h2>",
        '<p class="legend"><span><i class="sw" style="background:#f00"></i>ground truth</span>'
        '<span><i class="sw" style="background:#0f0"></i>prediction</span>'
        '<span class="note">sorted by Dice ascending, then HD95 descending'
        + ("; uncertainty = ensemble std (inferno colour map)" if "<th>uncertainty</th>" in header_cells else "")
        + "</span></p>",
        '<div class="pager"></div>', '<table class="cases"><thead><tr>', *header_cells, "</tr></thead>",
    ]
    for k, rows in enumerate(pages):
        first, last = k * page_size + 1, k * page_size + len(rows)
        parts.append(f'<tbody class="page" data-page="{k + 1}" data-label="{first}–{last}">')
        parts += rows
        parts.append("</tbody>")
    parts += ["</table>", '<div class="pager"></div></section></main>', f"<script>{_JS}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------- writing


def write_report(
    report: dict[str, Any],
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    images_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    page_size: int = 100,
    thumb_size: int = 128,
) -> Path:
    """Write the HTML report of ``evaluate_folders(pred_dir, gt_dir)``'s ``report`` to ``out_dir``.

    Args:
        report: ``{"cases": [{"name", "dice", "iou", "hd95"[, "per_class"]}, ...], "mean": {...}}`` as
            :func:`spadfast.evaluation.evaluate.evaluate_folders` returns it; case names are mask file names in both folders.
        pred_dir: predicted masks (``<name>``); ``pred_dir/uncertainty/<stem>.png`` (``predict --uncertainty``) is
            shown when present.
        gt_dir: ground-truth masks (``<name>``).
        out_dir: report folder (see the module docstring): created, or a previous report whose own files are
            replaced (other files in it are kept).
        images_dir: optional images, matched by file stem; without it contours are drawn on black.
        run_dir: optional training run (its log, ``checkpoint.safetensors``): adds the training curves.
        page_size: case rows per page.
        thumb_size: longest side of a thumbnail in pixels (small images are enlarged by a whole factor).

    Returns:
        The path of ``out_dir/index.html``.

    Raises:
        ValueError: ``report`` malformed; a case without its prediction, ground truth or image (names the path);
            masks and images of different sizes; ``out_dir`` exists and is not a spadfast report; ``run_dir``
            without a log.
    """
    cases = _check_report(report)
    pred_dir, gt_dir, out = Path(pred_dir), Path(gt_dir), Path(out_dir)
    images = Path(images_dir) if images_dir is not None else None
    check_int(page_size, "page_size", 1)
    check_int(thumb_size, "thumb_size", 8)
    check_report_dir(out)
    files = case_files(cases, pred_dir, gt_dir, images)
    run = Path(run_dir) if run_dir is not None else None
    if run is not None:
        from .plots import read_log

        read_log(run)  # fail before any work on a run folder without a log

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.spadfast-tmp-"))
    try:
        (tmp / "thumbs").mkdir()
        (tmp / "plots").mkdir()
        order = _worst_first(cases)
        width = len(str(len(cases)))
        rows, show_image, show_unc = [], images is not None, any(f["unc"] is not None for f in files)
        columns = [key for key, _, _ in _columns(report)]
        for rank, i in enumerate(order, 1):
            key = f"{i:0{width}d}"
            thumbs, th, note = thumbnails(files[i], tmp, key, thumb_size)
            rows.append(_case_row(rank, cases[i], thumbs, th, show_image, show_unc, columns, note))
        header = ['<th>#</th>', "<th>case</th>", *(f"<th>{label} {arrow}</th>" for _, label, arrow in _columns(report))]
        if any(c.get("per_class") for c in cases):
            header.append("<th>Dice per class</th>")
        if show_image:
            header.append("<th>image</th>")
        header += ["<th>ground truth</th>", "<th>prediction vs GT</th>"]
        if show_unc:
            header.append("<th>uncertainty</th>")
        plots: dict[str, str] = {}
        curves_note = ""
        try:
            from .plots import plot_curves, plot_metric_distributions

            plot_metric_distributions(report, tmp / "plots" / "metrics.png")
            plots["metrics"] = "plots/metrics.png"
            if run is not None:
                plot_curves(run, tmp / "plots" / "curves.png", layout="row")
                plots["curves"] = "plots/curves.png"
                curves_note = f"Run <code>{html.escape(str(run))}</code>."
        except ImportError:
            curves_note = "matplotlib is not installed: no plots (pip install matplotlib)."
        meta = {"predictions": str(pred_dir), "ground truth": str(gt_dir)}
        if images is not None:
            meta["images"] = str(images)
        meta["written"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        meta["spadfast"] = __version__
        page = _page(report, rows, header, meta, plots, curves_note, page_size)
        (tmp / "index.html").write_text(page, encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        (tmp / MARKER).write_text(f"spadfast {__version__} evaluation report\n", encoding="utf-8")
        for p in [tmp, *tmp.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)  # mkdtemp makes 0700
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


# -------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that ``spadfast evaluate`` gains: ``--report DIR``, ``--images DIR``, ``--run RUN``."""
    parser.add_argument("--report", type=Path, metavar="DIR", help="write an HTML report (DIR/index.html)")
    parser.add_argument("--images", type=Path, metavar="DIR", help="images for the report's thumbnails (by stem)")
    parser.add_argument("--run", type=Path, metavar="RUN", help="training run: adds loss / Dice / PaS curves")


def _check_flags(args: argparse.Namespace) -> None:
    if args.report is None and (getattr(args, "images", None) is not None or getattr(args, "run", None) is not None):
        raise ValueError("--images and --run only apply to a report: add --report DIR")


def check_arguments(args: argparse.Namespace) -> None:
    """Check ``--report``, ``--images`` and ``--run`` before any case is scored: the report folder (new, empty or a
    previous report), the run's log, and that every case of ``--pred``/``--gt`` has its image."""
    _check_flags(args)
    if args.report is None:
        return
    from .evaluate import case_names
    from .plots import read_log

    check_report_dir(args.report, "--report")
    images = Path(args.images) if args.images is not None else None
    case_files([{"name": n} for n in case_names(args.pred, args.gt)], Path(args.pred), Path(args.gt), images)
    if args.run is not None:
        read_log(args.run)


def main(args: argparse.Namespace, report: dict[str, Any] | None = None) -> int:
    """Write the report of ``spadfast evaluate`` when ``--report`` was given (checking the arguments, then
    evaluating, if ``report`` is None); ``--images``/``--run`` without ``--report`` are a ValueError."""
    if report is None:
        check_arguments(args)
    _check_flags(args)
    if args.report is None:
        return 0
    if report is None:
        from .evaluate import evaluate_folders

        spacing = getattr(args, "spacing", None)
        report = evaluate_folders(args.pred, args.gt, spacing=tuple(spacing) if spacing else None,
                                  ignore=getattr(args, "ignore", None))
    path = write_report(report, args.pred, args.gt, args.report, images_dir=args.images, run_dir=args.run)
    print(f"spadfast evaluate: report {path}")
    return 0
