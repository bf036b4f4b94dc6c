"""Plots: training curves with the PaS schedule, metric distributions, ablation bars (matplotlib, imported lazily).

Every function builds a :class:`matplotlib.figure.Figure` directly on the Agg canvas (no ``pyplot``, so no global
backend or figure state is touched) and writes the file atomically (:func:`spadfast.io.files.write_atomic`).
``matplotlib`` is an optional dependency: it is imported when a plot is drawn, and its absence is an ImportError
saying how to install it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..io.paths import check_output_file

__all__ = [
    "read_log", "run_config", "pas_curve", "plot_curves", "plot_metric_distributions", "plot_ablation",
    "add_arguments", "main", "CREATOR", "PLOT_FORMATS", "plot_format", "plot_metadata", "is_spadfast_plot",
    "check_plot_target"
]


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("spadfast plots need matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path, dpi: int = 100) -> Path:
    from ..io.files import write_atomic
    from .plots import plot_format, plot_metadata

    path = Path(path)
    fmt = plot_format(path)
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, metadata=plot_metadata()))


# ---------------------------------------------------------------------------------------------- training curves


def read_log(run: str | Path, log_file: str | None = None) -> list[dict[str, Any]]:
    """The records of the run's training log (``{"step", "loss", "lr", "steps_per_s"[, "val_dice"]}`` or
    ``{"step", "val_dice"}``), in file order.

    Args:
        run: a ``spadfast train --out`` folder.
        log_file: the log's file name in ``run``; None: the ``log_file`` of the config recorded in the run's
            checkpoint, or ``log.jsonl`` when the run has no checkpoint yet.

    Raises:
        ValueError: ``run`` is not a folder, has no log, or the log has a line that is not a JSON record with a
            ``"step"`` (names the file and line); an unreadable checkpoint.
    """
    run = Path(run)
    if not run.is_dir():
        raise ValueError(f"run folder {str(run)!r} does not exist")
    if log_file is None:
        cfg = run_config(run)
        log_file = cfg.log_file if cfg is not None else "log.jsonl"
    path = run / log_file
    if not path.is_file():
        raise ValueError(f"run folder {str(run)!r} has no training log {log_file} (is it a `spadfast train --out` "
                         "folder?)")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i} is not JSON: {e}") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            raise ValueError(f"{path}:{i} is not a log record with an integer \"step\"")
        records.append(rec)
    if not records:
        raise ValueError(f"training log {str(path)!r} is empty")
    return records


def run_config(run: str | Path):
    """The :class:`SPADConfig` stored in ``RUN/checkpoint.safetensors``'s header, or None without a checkpoint.

    Reads the safetensors header only (no tensors).
    """
    from safetensors import safe_open

    from ..config import SPADConfig
    from ..models.checkpoint import resolve_path

    path = resolve_path(run)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["meta"])
        return SPADConfig.from_dict(meta["config"])
    except Exception as e:
        raise ValueError(f"checkpoint {str(path)!r} has no readable spadfast config: {e}") from None


def pas_curve(config, steps: np.ndarray) -> dict[str, np.ndarray]:
    """PaS over training steps: ``{"factor": f(p), "scd": scd_max * f, "bcd": bcd_max * f}``, float64 ``[N]``
    each, with ``p = step / (pas_steps or train_steps)`` and ``f`` = :func:`spadfast.diffusion.perturb.perturb_factor`.

    Example:
        >>> from spadfast.config import SPADConfig
        >>> cfg = SPADConfig(train_steps=100, perturb={"pas_kind": "linear", "pas_end": 0.5})
        >>> pas_curve(cfg, np.array([0, 25, 50, 100]))["factor"].tolist()
        [1.0, 0.5, 0.0, 0.0]
    """
    from ..diffusion.perturb import perturb_factor

    horizon = config.pas_horizon
    f = np.array([perturb_factor(float(s) / horizon, config.perturb) for s in steps], dtype=np.float64)
    return {"factor": f, "scd": config.perturb.scd_max * f, "bcd": config.perturb.bcd_max * f}


def _series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key``; a step logged twice (a resumed run) keeps its last value."""
    by_step: dict[int, float] = {}
    for r in records:
        if key in r and r[key] is not None:
            by_step[int(r["step"])] = float(r[key])
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def plot_curves(
    run: str | Path, out: str | Path | None = None, log_file: str | None = None, layout: str = "column"
) -> Path:
    """Loss (top) and validation Dice (bottom) against steps from the run's log (see :func:`read_log`), each with
    the PaS strength on a second axis, recomputed from the checkpoint's config (omitted, with a note, when the run
    has no checkpoint).

    Args:
        run: a ``spadfast train --out`` folder.
        out: image file (``.png``/``.svg``/``.pdf``); default ``RUN/curves.png``.
        log_file: the log's file name; None: the one the run's checkpoint records (see :func:`read_log`).
        layout: ``"column"`` (loss above Dice) or ``"row"`` (side by side, a wide short figure for pages).

    Returns:
        The file written.

    Raises:
        ValueError: no run folder or no log (see :func:`read_log`), or an unreadable checkpoint.
    """
    run = Path(run)
    records = read_log(run, log_file)
    cfg = run_config(run)
    out = Path(out) if out is not None else run / "curves.png"
    loss_steps, loss = _series(records, "loss")
    dice_steps, dice = _series(records, "val_dice")
    last = max(int(r["step"]) for r in records)
    if cfg is not None:
        last = max(last, cfg.train_steps)
    if layout not in ("column", "row"):
        raise ValueError(f"`layout` must be 'column' or 'row', got {layout!r}")
    fig = _figure(7.5, 5.5) if layout == "column" else _figure(8.5, 2.9)
    ax_loss, ax_dice = fig.subplots(2, 1, sharex=True) if layout == "column" else fig.subplots(1, 2)
    if loss.size:
        ax_loss.plot(loss_steps, loss, color="tab:blue", marker="." if loss.size < 30 else None, label="loss")
        if (loss > 0).all():
            ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no loss records", transform=ax_loss.transAxes, ha="center", va="center")
    ax_loss.set_ylabel("training loss")
    if dice.size:
        ax_dice.plot(dice_steps, dice, color="tab:green", marker="o", label="val Dice")
        ax_dice.set_ylim(min(0.0, float(dice.min())), 1.0)
    else:
        ax_dice.text(0.5, 0.5, "no validation Dice in the log (config.val_every = 0?)", transform=ax_dice.transAxes,
                     ha="center", va="center", color="0.4")
    ax_dice.set_ylabel("validation Dice (EMA)")
    for ax in (ax_dice,) if layout == "column" else (ax_loss, ax_dice):
        ax.set_xlabel("optimizer step")
        ax.set_xlim(0, max(last, 1))
    title = f"{run.name}: {last} steps"
    if cfg is not None:
        grid = np.unique(np.linspace(0, max(last, 1), num=min(max(last, 1) + 1, 2000)).round().astype(np.int64))
        pas = pas_curve(cfg, grid)
        p = cfg.perturb
        label = (f"PaS f(p), {p.pas_kind}" if p.enabled else "PaS off (perturb.enabled = False)")
        for ax in (ax_loss, ax_dice):
            twin = ax.twinx()
            twin.fill_between(grid, pas["factor"], step=None, color="tab:orange", alpha=0.12, linewidth=0)
            twin.plot(grid, pas["factor"], color="tab:orange", linewidth=1.2, label=label)
            twin.set_ylim(0, 1.05)
            twin.set_ylabel("PaS strength f(p)", color="tab:orange")
            twin.tick_params(axis="y", colors="tab:orange")
        title += (f"; ScD std {p.scd_max:g}·f, BcD std {p.bcd_max:g}·f, blur σ {p.blur_sigma_max:g}·f; "
                  f"p = step / {cfg.pas_horizon}" if p.enabled else "; no SPAD perturbation")
        ax_loss.legend(handles=ax_loss.get_lines() + twin.get_lines(), loc="upper right", fontsize=8)
    else:
        title += " (no checkpoint: PaS schedule not shown)"
    fig.suptitle(title, fontsize=9)
    return _save(fig, out)


# --------------------------------------------------------------------------------------- metric distributions


def _finite(values: list[float]) -> tuple[np.ndarray, int]:
    a = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(a)
    return a[keep], int((~keep).sum())


def plot_metric_distributions(report: dict[str, Any], out: str | Path) -> Path:
    """Histograms of per-case Dice, IoU and HD95 from ``evaluate_folders``'s report (infinite HD95 counted in the
    panel title, not drawn); when cases carry ``"per_class"``, a second row of per-class box plots.

    Args:
        report: ``{"cases": [{"name", "dice", "iou", "hd95"[, "per_class": {"1": {...}}]}, ...], "mean": {...}}``;
            HD95 is labelled in ``report["hd95_unit"]`` (e.g. ``"mm"``), pixels when absent.
        out: image file (``.png``/``.svg``/``.pdf``).

    Returns:
        The file written.
    """
    from .metrics import METRICS

    cases = report["cases"]
    classes = sorted({k for c in cases for k in c.get("per_class", {})}, key=lambda k: (len(k), k))
    unit = report.get("hd95_unit", "px")
    keys = [k for k in METRICS if all(k in c for c in cases)]
    rows = 2 if classes else 1
    fig = _figure(3.0 * len(keys), 2.8 * rows)
    axes = np.atleast_2d(fig.subplots(rows, len(keys), squeeze=False))
    for j, m in enumerate(keys):
        spec = METRICS[m]
        ax = axes[0, j]
        vals, n_inf = _finite([c[m] for c in cases])
        bins = (np.linspace(*spec.value_range, 21) if spec.value_range
                else min(30, max(5, int(np.sqrt(max(vals.size, 1))))))
        if vals.size:
            ax.hist(vals, bins=bins, color="tab:blue", alpha=0.8, edgecolor="white")
            ax.axvline(float(np.median(vals)), color="k", linestyle="--", linewidth=1, label="median")
        ax.set_title(f"{spec.label} ({len(cases)} cases" + (f", {n_inf} inf" if n_inf else "")
                     + "; dashed: median)",
                     fontsize=9)
        ax.set_xlabel(spec.axis_label(unit))
        ax.set_ylabel("cases")
        if spec.value_range:
            ax.set_xlim(*spec.value_range)
        if classes:
            box_ax = axes[1, j]
            data, labels = [], []
            for k in classes:
                v, _ = _finite([c["per_class"][k][m] for c in cases if k in c.get("per_class", {})])
                data.append(v if v.size else np.array([np.nan]))
                labels.append(f"class {k}")
            box_ax.boxplot(data, labels=labels) if _old_boxplot() else box_ax.boxplot(data, tick_labels=labels)
            box_ax.set_ylabel(spec.axis_label(unit))
            box_ax.set_title(f"{spec.label} per class", fontsize=9)
    return _save(fig, out)


def _old_boxplot() -> bool:
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return (major, minor) < (3, 9)


# ------------------------------------------------------------------------------------------------ ablation bars


def plot_ablation(result: dict[str, Any], out: str | Path) -> Path:
    """Mean Dice, IoU and HD95 per variant as points with ± std over seeds (``spadfast.study.ablation_stats.aggregate``'s result),
    SPAD's value as a dashed reference line; infinite or missing values are marked, not drawn. Points, not bars:
    the axes are zoomed to the values, and a bar's length would exaggerate small differences."""
    from .metrics import METRICS

    rows = result["rows"]
    names = [r["variant"] for r in rows]
    keys = [k for k in METRICS if all(k in r for r in rows)]
    fig = _figure(max(7.0, 1.1 * len(names) + 3) * len(keys) / 3, 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    x = np.arange(len(names))
    for ax, m in zip(axes, keys):
        means = np.array([r[m] for r in rows], dtype=np.float64)
        stds = np.array([r[f"{m}_std"] for r in rows], dtype=np.float64)
        ok = np.isfinite(means)
        has_std = np.isfinite(stds)
        for i in np.nonzero(ok)[0]:
            color = "tab:orange" if names[i] == "SPAD" else ("0.45" if names[i] == "baseline" else "tab:blue")
            ax.errorbar(x[i], means[i], yerr=stds[i] if has_std[i] else None, fmt="o", color=color, capsize=4)
            if names[i] == "SPAD":
                ax.axhline(means[i], color="tab:orange", linestyle="--", linewidth=0.8)
        for i in np.nonzero(~ok)[0]:
            ax.annotate("inf" if math.isinf(means[i]) else "n/a", (x[i], 0.5), xycoords=("data", "axes fraction"),
                        ha="center", fontsize=8, color="tab:red")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(names) - 0.5)
        spec = METRICS[m]
        ax.set_title(f"{spec.label} {spec.arrow}" + (" (px)" if spec.distance else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{result.get('train_steps', '?')} steps, {result.get('seeds', '?')} seed(s), "
                 f"{result.get('n_heldout', '?')} held-out cases; error bars: std over seeds", fontsize=9)
    return _save(fig, out)


# -------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spadfast plot``."""
    parser.add_argument("run", type=Path, help="run folder holding its training log (and checkpoint.safetensors)")
    parser.add_argument("--out", type=Path, help="image file (.png/.svg/.pdf; default: RUN/curves.png); an "
                        "existing file is replaced only if it is a spadfast plot")
    parser.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a spadfast plot")


def main(args: argparse.Namespace) -> int:
    """Handler of ``spadfast plot``: checks the output file, then draws :func:`plot_curves`."""
    from .plots import check_plot_target

    out = args.out if args.out is not None else Path(args.run) / "curves.png"
    check_plot_target(out, "--out", overwrite=getattr(args, "overwrite", False))
    path = plot_curves(args.run, out)
    print(f"spadfast plot: wrote {path}")
    return 0


CREATOR = "spadfast plot"
PLOT_FORMATS = ("png", "svg", "pdf")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEAD_BYTES = 1 << 16  # the SVG metadata block is at the top, the PDF information dictionary near the end
_SVG_TAG = re.compile(r"<dc:creator>\s*<cc:Agent>\s*<dc:title>" + re.escape(CREATOR) + r"[ <]")
_PDF_TAG = b"/Creator (" + CREATOR.encode() + b" "


def plot_format(path: str | os.PathLike) -> str:
    """``"png"``, ``"svg"`` or ``"pdf"`` from the file's suffix (none: png); another suffix is a ValueError."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"plot file {str(path)!r} must end in .png, .svg or .pdf")
    return fmt


def plot_metadata() -> dict[str, str]:
    """The ``metadata`` argument of ``Figure.savefig`` that tags a plot as spadfast's (every format takes it)."""
    return {"Creator": f"{CREATOR} {__version__}"}


def _png_creator(path: Path) -> str | None:
    """The ``Creator`` text of a PNG's ``tEXt`` chunks before the image data, or None."""
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind in (b"IDAT", b"IEND") or length > _HEAD_BYTES:
                return None
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # CRC
            if kind == b"tEXt" and data.startswith(b"Creator\x00"):
                return data[len(b"Creator\x00"):].decode("latin-1")


def is_spadfast_plot(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file written by a spadfast plot (its creator tag, read from the file's metadata)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        fmt = plot_format(path)
        if fmt == "png":
            creator = _png_creator(path)
            return creator is not None and (creator + " ").startswith(CREATOR + " ")
        with open(path, "rb") as f:
            if fmt == "svg":
                return _SVG_TAG.search(f.read(_HEAD_BYTES).decode("utf-8", "replace")) is not None
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _HEAD_BYTES))
            return _PDF_TAG in f.read()
    except (OSError, ValueError):
        return False


def check_plot_target(path: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """A plot file about to be written: a known format, not a folder, in a writable folder, and either new, a
    previous spadfast plot, or ``overwrite`` given; anything else is a ValueError naming ``name`` and the file."""
    path = check_output_file(path, name)
    plot_format(path)
    if path.exists() and not overwrite and not is_spadfast_plot(path):
        raise ValueError(f"{name} {str(path)!r} exists and is not a spadfast plot: choose another file, or pass "
                         "--overwrite to replace it")
    return path
