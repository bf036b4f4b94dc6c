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
other files in it are kept (:mod:`spadfast.evaluation.report`).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..io.paths import check_writable_dir
from ..ops.checks import check_int

__all__ = [
    "write_report", "add_arguments", "check_arguments", "main", "MARKER", "check_report_dir", "foreign_entries",
    "swap_in", "GT_COLOR", "PRED_COLOR", "case_files", "thumbnails"
]


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


MARKER = ".spadfast-report"
_OWN_FILES = frozenset({"index.html", "report.json", MARKER})
_OWN_FOLDERS = {
    "plots": re.compile(r"(metrics|curves)\.png"),
    "thumbs": re.compile(r"\d+_(img|gt|pred|unc)\.png"),
}


def check_report_dir(out: str | os.PathLike, name: str = "report folder") -> Path:
    """``out`` may receive a report: new, empty, or a previous report (holds :data:`MARKER`), and writable.

    Raises:
        ValueError: ``out`` is a file, not writable, a non-empty folder that is not a spadfast report, or holds a
            file where the report writes a folder (names the path).
    """
    out = Path(out)
    check_writable_dir(out, name)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"{name} {str(out)!r} exists, is not empty and is not a spadfast report (no {MARKER} "
                         "file): choose another folder; spadfast writes reports only into new folders or its own")
    for folder in _OWN_FOLDERS:
        if (out / folder).exists() and not (out / folder).is_dir():
            raise ValueError(f"{name} {str(out)!r} holds a file {folder!r} where the report writes a folder: move "
                             "it away")
    return out


def foreign_entries(out: Path) -> list[Path]:
    """Paths relative to ``out`` of everything that is not the report's own (a foreign folder is one entry)."""
    found = []
    for entry in sorted(out.iterdir()):
        if entry.name in _OWN_FILES:
            continue
        pattern = _OWN_FOLDERS.get(entry.name)
        if pattern is None or not entry.is_dir():
            found.append(Path(entry.name))
            continue
        found += [Path(entry.name, p.name) for p in sorted(entry.iterdir()) if not pattern.fullmatch(p.name)]
    return found


def _move(entries: list[Path], src: Path, dst: Path) -> None:
    for rel in entries:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src / rel, dst / rel)


def swap_in(tmp: Path, out: Path) -> None:
    """Move the finished report folder ``tmp`` to ``out`` by renames (never half-written). A previous report at
    ``out`` is replaced; its foreign entries (:func:`foreign_entries`) move into the new folder first."""
    if not out.exists():
        os.replace(tmp, out)
        return
    foreign = foreign_entries(out)
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.spadfast-old-"))
    old.rmdir()
    os.replace(out, old)
    moved: list[Path] = []
    try:
        for rel in foreign:
            _move([rel], old, tmp)
            moved.append(rel)
        os.replace(tmp, out)
    except BaseException:
        _move(moved, tmp, old)  # the user's files go back with the previous report
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


GT_COLOR = (0, 0, 255)  # BGR red
PRED_COLOR = (0, 255, 0)  # BGR green


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith((".nii.gz", ".nii"))


class _Folder:
    """Finds a case's image or uncertainty file in a folder: ``folder/<name>`` (PNG masks: names are file names) or
    the NIfTI file whose stem is ``<name>`` (volumes: names are case names); PNG images by stem, NIfTI images by case
    (channel 0). Predictions and ground truth are paired by :func:`spadfast.evaluation.evaluate.list_pairs`."""

    def __init__(self, folder: Path, images: bool = False) -> None:
        self.folder, self.images = folder, images
        self._by_stem: dict[str, Path] | None = None
        self._volumes: dict[str, Path] | None = None

    def _volume_index(self) -> dict[str, Path]:
        if self._volumes is None:
            from ..io.nifti import group_cases, volume_files, volume_stem

            has_volumes = any(volume_stem(p) is not None for p in self.folder.iterdir())
            if not has_volumes:
                self._volumes = {}
            elif self.images:
                self._volumes = {case: paths[0] for case, paths in group_cases(self.folder).items()}
            else:
                self._volumes = volume_files(self.folder)
        return self._volumes

    def find(self, name: str) -> Path | None:
        if not self.images and (self.folder / name).is_file():
            return self.folder / name
        if self.images and not _is_volume(Path(name)) and "." in name:
            if self._by_stem is None:
                from ..io.files import index_folder

                self._by_stem = index_folder(self.folder)
            found = self._by_stem.get(Path(name).stem)
            if found is not None:
                return found
        return self._volume_index().get(name)


def case_files(cases: list[dict[str, Any]], pred_dir: Path, gt_dir: Path,
               images_dir: Path | None) -> list[dict[str, Path | None]]:
    """Every case's files; a missing prediction, ground truth or image is a ValueError naming the path."""
    for folder, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise ValueError(f"{what} folder {str(folder)!r} does not exist")
    if images_dir is not None and not images_dir.is_dir():
        raise ValueError(f"images folder {str(images_dir)!r} does not exist")
    from .evaluate import list_pairs

    _, pred_files, gt_files, _ = list_pairs(pred_dir, gt_dir)  # evaluate's own pairing of the two folders
    images = _Folder(images_dir, images=True) if images_dir is not None else None
    unc_dir = pred_dir / "uncertainty"
    unc_f = _Folder(unc_dir) if unc_dir.is_dir() else None
    out = []
    for case in cases:
        name = case["name"]
        pred, gt = pred_files.get(name), gt_files.get(name)
        for path, folder, what in ((pred, pred_dir, "prediction"), (gt, gt_dir, "ground truth")):
            if path is None:
                also = "" if "." in name else f" or {name}.nii.gz"
                raise ValueError(f"{what} for case {name!r} not found: expected {str(folder / name)!r}{also}; the "
                                 "prediction and ground-truth folders do not pair with this report")
        image = None
        if images is not None:
            image = images.find(name)
            if image is None:
                raise ValueError(f"images folder {str(images_dir)!r} has no image for case {name!r}")
        unc = None
        if unc_f is not None:
            unc = unc_f.find(f"{Path(name).stem}.png") if not _is_volume(gt) else unc_f.find(name)  # type: ignore
        out.append({"pred": pred, "gt": gt, "image": image, "unc": unc})
    return out


# ------------------------------------------------------------------------------------------------- thumbnails


def _labels(path: Path) -> np.ndarray:
    """A mask file as an integer label map (0 background; 0/255 binary masks give one label, 255): ``[H,W]`` for
    images, ``[I,J,K]`` for NIfTI volumes."""
    if _is_volume(path):
        from ..io.nifti import read_nifti, read_voxels

        a = read_voxels(read_nifti(path), path)
        if a.ndim == 4 and a.shape[3] == 1:
            a = a[:, :, :, 0]
        if a.ndim != 3:
            raise ValueError(f"label map {str(path)!r} has shape {a.shape}; expected 3-D")
        return np.rint(a).astype(np.int64) if a.dtype.kind == "f" else a.astype(np.int64)
    from ..io.label_maps import read_label_png

    return read_label_png(path).astype(np.int64)


def _to_unit(plane: np.ndarray) -> np.ndarray:
    """A volume's intensity plane as float32 in [0, 1], windowed to its 0.5-99.5th percentiles."""
    plane = plane.astype(np.float32)
    lo, hi = np.percentile(plane, [0.5, 99.5]) if plane.size else (0.0, 1.0)
    return np.clip((plane - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(plane)


def _case_planes(files: dict[str, Path | None]) -> dict[str, Any]:
    """What a case's thumbnails show: ``gt``/``pred`` int label maps ``[H,W]``, ``image`` float32 ``[H,W]`` or
    ``[H,W,3]`` RGB in [0, 1] (or None), ``unc`` uint8 ``[H,W]`` (or None) and ``note`` (the slice of a volume).

    Volumes are shown on one slice along the coarsest axis (the largest voxel size): the slice with the most
    ground-truth foreground (else the most predicted foreground, else the middle one).
    """
    import cv2

    gt_path, pred_path = files["gt"], files["pred"]
    gt, pred = _labels(gt_path), _labels(pred_path)  # type: ignore[arg-type]
    if pred.shape != gt.shape:
        raise ValueError(f"{str(pred_path)!r} has shape {pred.shape} but {str(gt_path)!r} has {gt.shape}")
    out: dict[str, Any] = {"image": None, "unc": None, "note": ""}
    if gt.ndim == 3:
        from ..data.volumes import coarsest_axis
        from ..io.nifti import read_nifti, read_voxels, spacing_of

        axis = coarsest_axis(spacing_of(read_nifti(gt_path)))
        others = tuple(i for i in range(3) if i != axis)
        counts = (gt > 0).sum(axis=others)
        if not counts.any():
            counts = (pred > 0).sum(axis=others)
        index = int(np.argmax(counts)) if counts.any() else gt.shape[axis] // 2

        def plane(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.take(a, index, axis=axis))

        out.update(gt=plane(gt), pred=plane(pred), note=f"slice {index} of {gt.shape[axis]}, axis {axis}")
        if files["image"] is not None:
            vol = read_voxels(read_nifti(files["image"]), files["image"])
            vol = vol[..., 0] if vol.ndim == 4 else vol
            if vol.shape != gt.shape:
                raise ValueError(f"image {str(files['image'])!r} has shape {vol.shape} but its label map "
                                 f"{str(gt_path)!r} has {gt.shape}")
            out["image"] = _to_unit(plane(vol))
        if files["unc"] is not None:
            u = read_voxels(read_nifti(files["unc"]), files["unc"]).astype(np.float32)
            u = u.max(axis=3) if u.ndim == 4 else u
            if u.shape == gt.shape:
                out["unc"] = np.clip(plane(u) * 2 * 255, 0, 255).astype(np.uint8)
        return out
    out.update(gt=gt, pred=pred)
    if files["image"] is not None:
        from ..io.files import read_image

        image = read_image(files["image"])
        if image.shape[:2] != gt.shape:
            raise ValueError(f"image {str(files['image'])!r} is {image.shape[1]}x{image.shape[0]} but its mask "
                             f"{str(gt_path)!r} is {gt.shape[1]}x{gt.shape[0]}")
        out["image"] = image
    if files["unc"] is not None:
        u = cv2.imread(str(files["unc"]), cv2.IMREAD_GRAYSCALE)
        if u is None:
            raise ValueError(f"cannot read uncertainty map {str(files['unc'])!r}")
        if u.shape == gt.shape:
            out["unc"] = u
    return out


def _scale(shape: tuple[int, int], size: int) -> tuple[int, int, bool]:
    """Thumbnail size for an ``[H,W]`` image: shrink to ``size``, or enlarge by a whole factor (crisp pixels)."""
    h, w = shape
    if max(h, w) > size:
        f = size / max(h, w)
        return max(1, round(h * f)), max(1, round(w * f)), False
    k = max(1, size // max(h, w))
    return h * k, w * k, True


def _resize_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    if labels.shape == hw:
        return labels
    return cv2.resize(labels.astype(np.int32), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _draw(canvas: np.ndarray, labels: np.ndarray, color: tuple[int, int, int]) -> None:
    import cv2

    for value in np.unique(labels):
        if value == 0:
            continue
        contours, _ = cv2.findContours((labels == value).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, color, max(1, round(min(labels.shape) / 160)))


def _write_png(path: Path, array: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"cannot encode thumbnail {path}")
    path.write_bytes(data.tobytes())


def thumbnails(
    files: dict[str, Path | None], folder: Path, key: str, size: int
) -> tuple[dict[str, str], tuple[int, int], str]:
    """Write the case's thumbnails (uint8 BGR PNGs, longest side <= ``size``); returns kind -> relative path, the
    thumbnails' ``(H, W)`` and a note (which slice of a volume is shown)."""
    import cv2

    planes = _case_planes(files)
    gt, pred = planes["gt"], planes["pred"]
    th, tw, enlarge = _scale(gt.shape, size)
    interp = cv2.INTER_NEAREST if enlarge else cv2.INTER_AREA
    if planes["image"] is not None:
        u8 = np.clip(np.rint(planes["image"] * 255), 0, 255).astype(np.uint8)
        u8 = cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR) if u8.ndim == 2 else cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)
        base = cv2.resize(u8, (tw, th), interpolation=interp)
    else:
        base = np.zeros((th, tw, 3), np.uint8)
    gt_s, pred_s = _resize_labels(gt, (th, tw)), _resize_labels(pred, (th, tw))
    gt_canvas = base.copy()
    _draw(gt_canvas, gt_s, GT_COLOR)
    both = gt_canvas.copy()
    _draw(both, pred_s, PRED_COLOR)
    pictures = {"gt": gt_canvas, "pred": both}
    if planes["image"] is not None:
        pictures["img"] = base
    if planes["unc"] is not None:
        u = cv2.resize(planes["unc"], (tw, th), interpolation=interp)
        pictures["unc"] = cv2.applyColorMap(u, cv2.COLORMAP_INFERNO)
    out = {}
    for kind, picture in pictures.items():
        rel = f"thumbs/{key}_{kind}.png"
        _write_png(folder / rel, picture)
        out[kind] = rel
    return out, (th, tw), planes["note"]
