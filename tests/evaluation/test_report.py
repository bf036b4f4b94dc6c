"""spadfast.evaluation.report: the HTML evaluation report (structure read back with html.parser, links, values, errors)."""

from __future__ import annotations

import argparse
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from spadfast.evaluation.evaluate import evaluate_folders
from spadfast.evaluation.report import add_arguments, main, write_report
from spadfast.evaluation.report import MARKER
from spadfast.io.files import write_mask_png


class _Page(HTMLParser):
    """Collects the case rows (name, data-value cells, image links), summary rows and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.cases: list[dict] = []
        self.summary: list[dict] = []
        self.links: list[str] = []
        self.imgs: list[dict] = []
        self.pages: list[str] = []
        self._row: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.links.append(a[key])
        if tag == "tbody" and "page" in (a.get("class") or "").split():
            self.pages.append(a["data-page"])
        if tag == "tr" and a.get("class") == "case":
            self._row = {"name": a["data-name"], "values": [], "imgs": []}
            self.cases.append(self._row)
        elif tag == "tr" and "data-metric" in a:
            self._row = {"scope": a["data-scope"], "metric": a["data-metric"], "values": [], "imgs": []}
            self.summary.append(self._row)
        elif tag == "td" and self._row is not None and "data-value" in a:
            self._row["values"].append(float(a["data-value"]))
        elif tag == "img":
            self.imgs.append(a)
            if self._row is not None:
                self._row["imgs"].append(a)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _disk(center: tuple[int, int], r: int, size: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """5 cases at 16 px: images, ground truth, predictions (one empty: HD95 inf), uncertainty maps for 3."""
    gt, pred, images = tmp_path / "gt", tmp_path / "pred", tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(5):
        g = _disk((8, 8), 3 + i % 2)
        p = _disk((8 + i - 2, 8), 3) if i != 4 else np.zeros((16, 16), bool)
        write_mask_png(gt / f"c{i}.png", g)
        write_mask_png(pred / f"c{i}.png", p)
        images.mkdir(exist_ok=True)
        cv2.imwrite(str(images / f"c{i}.png"), rng.integers(0, 255, (16, 16), dtype=np.uint8))
        if i < 3:
            (pred / "uncertainty").mkdir(exist_ok=True)
            cv2.imwrite(str(pred / "uncertainty" / f"c{i}.png"), rng.integers(0, 255, (16, 16), dtype=np.uint8))
    return {"gt": gt, "pred": pred, "images": images, "root": tmp_path}


def _same(a: float, b: float) -> bool:
    return (math.isinf(a) and math.isinf(b)) or (math.isnan(a) and math.isnan(b)) or a == b


def test_report_structure_links_and_values(folders):
    report = evaluate_folders(folders["pred"], folders["gt"])
    out = folders["root"] / "report"
    index = write_report(report, folders["pred"], folders["gt"], out, images_dir=folders["images"])
    assert index == out / "index.html" and (out / MARKER).is_file()
    page = _parse(index)
    by_name = {c["name"]: c for c in report["cases"]}
    assert sorted(c["name"] for c in page.cases) == sorted(by_name)  # every case, once
    for row in page.cases:
        case = by_name[row["name"]]
        assert all(_same(v, case[k]) for v, k in zip(row["values"], ("dice", "iou", "hd95")))
    dices = [by_name[r["name"]]["dice"] for r in page.cases]
    assert dices == sorted(dices)  # worst first
    assert page.cases[0]["name"] == "c4.png" and math.isinf(page.cases[0]["values"][2])  # the empty prediction
    for link in page.links:  # relative links to files of the report folder
        assert not link.startswith(("/", "http:", "https:", "file:")), link
        assert (out / link).is_file(), link
    for img in page.imgs:
        if img["src"].startswith("thumbs/"):
            assert img.get("loading") == "lazy"
            thumb = cv2.imread(str(out / img["src"]))
            assert max(thumb.shape[:2]) <= 160 and (int(img["height"]), int(img["width"])) == thumb.shape[:2]
    kinds = {r["name"]: [Path(i["src"]).stem.split("_")[1] for i in r["imgs"]] for r in page.cases}
    assert kinds["c0.png"] == ["img", "gt", "pred", "unc"] and kinds["c4.png"] == ["img", "gt", "pred"]
    summary = {(r["scope"], r["metric"]): r["values"] for r in page.summary}
    for m in ("dice", "iou", "hd95"):
        mean, median, lo, hi = summary[("all", m)]
        values = [c[m] for c in report["cases"]]
        assert _same(mean, report["mean"][m]) and _same(median, float(np.median(values)))
        assert _same(lo, min(values)) and _same(hi, max(values))
    assert (out / "plots" / "metrics.png").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert [c["name"] for c in saved["cases"]] == [c["name"] for c in report["cases"]]


def test_pages_without_images_and_replace(folders):
    report = evaluate_folders(folders["pred"], folders["gt"])
    out = folders["root"] / "report"
    write_report(report, folders["pred"], folders["gt"], out, page_size=2, thumb_size=32)
    (out / "thumbs" / "7_img.png").write_bytes(b"a thumbnail of an earlier, larger report")
    page = _parse(write_report(report, folders["pred"], folders["gt"], out, page_size=2, thumb_size=32))
    assert page.pages == ["1", "2", "3"] and len(page.cases) == 5
    assert not (out / "thumbs" / "7_img.png").exists()  # the report's own files are replaced as a whole
    assert all("_img" not in i["src"] for i in page.imgs)  # no images folder: contours on black
    gt_thumb = cv2.imread(str(out / page.cases[-1]["imgs"][0]["src"]))
    assert gt_thumb.shape == (32, 32, 3) and (gt_thumb[:, :, 2] == 255).any() and gt_thumb[:, :, :2].max() == 0
    leftovers = [p.name for p in folders["root"].iterdir() if p.name.startswith(".report")]
    assert leftovers == []


def test_per_class_summary(folders):
    report = evaluate_folders(folders["pred"], folders["gt"])
    for i, case in enumerate(report["cases"]):
        case["per_class"] = {"1": {k: case[k] for k in ("dice", "iou", "hd95")},
                             "2": {"dice": 0.5 + 0.1 * i, "iou": 0.25, "hd95": 1.0}}
    report["mean"]["per_class"] = {"1": dict(report["mean"]), "2": {"dice": 0.7, "iou": 0.25, "hd95": 1.0}}
    out = folders["root"] / "report"
    page = _parse(write_report(report, folders["pred"], folders["gt"], out))
    summary = {(r["scope"], r["metric"]): r["values"] for r in page.summary}
    assert summary[("class 2", "dice")][:2] == [0.7, pytest.approx(0.7)]  # JSON mean, median of the cases
    assert ("class 1", "hd95") in summary and len(summary) == 9
    assert "Dice per class" in (out / "index.html").read_text()


def test_run_curves_section(folders):
    run = folders["root"] / "run"
    run.mkdir()
    log = [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "steps_per_s": 5.0} for s in (1, 2, 3, 4)]
    log.append({"step": 4, "val_dice": 0.5})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    report = evaluate_folders(folders["pred"], folders["gt"])
    out = folders["root"] / "report"
    page = _parse(write_report(report, folders["pred"], folders["gt"], out, run_dir=run))
    assert "plots/curves.png" in page.links and (out / "plots" / "curves.png").stat().st_size > 0


def test_bad_inputs_name_the_path(folders):
    report = evaluate_folders(folders["pred"], folders["gt"])
    root = folders["root"]
    other = root / "not_a_report"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not_a_report"):
        write_report(report, folders["pred"], folders["gt"], other)
    assert (other / "notes.txt").read_text() == "mine"
    (folders["pred"] / "c3.png").unlink()
    with pytest.raises(ValueError, match=r"pred/c3\.png"):
        write_report(report, folders["pred"], folders["gt"], root / "r1")
    with pytest.raises(ValueError, match="does not exist"):
        write_report(report, root / "nowhere", folders["gt"], root / "r1")
    report2 = evaluate_folders(folders["gt"], folders["gt"])
    with pytest.raises(ValueError, match="no training log"):
        write_report(report2, folders["gt"], folders["gt"], root / "r1", run_dir=root)
    with pytest.raises(ValueError, match="cases"):
        write_report({"mean": {}}, folders["gt"], folders["gt"], root / "r1")
    assert not (root / "r1").exists()


def test_failed_build_keeps_previous_report(folders, monkeypatch):
    import spadfast.evaluation.report as rep

    report = evaluate_folders(folders["pred"], folders["gt"])
    out = folders["root"] / "report"
    write_report(report, folders["pred"], folders["gt"], out)
    before = (out / "index.html").read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rep, "_page", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(report, folders["pred"], folders["gt"], out)
    assert (out / "index.html").read_text() == before
    assert [p.name for p in folders["root"].iterdir() if p.name.startswith(".")] == []


def test_cli_handler(folders, capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--pred", type=Path)
    parser.add_argument("--gt", type=Path)
    add_arguments(parser)
    out = folders["root"] / "cli_report"
    args = parser.parse_args(["--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--report", str(out),
                              "--images", str(folders["images"])])
    assert main(args) == 0 and (out / "index.html").is_file()
    assert "index.html" in capsys.readouterr().out
    args = parser.parse_args(["--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--run", "x"])
    with pytest.raises(ValueError, match="--report"):
        main(args)


def test_volumes_show_one_slice(tmp_path):
    pytest.importorskip("nibabel")
    import shutil

    from spadfast.data.synthetic_volumes import write_demo_volumes

    root = write_demo_volumes(tmp_path / "data", n_cases=1, n_test=2, shape=(16, 16, 6))
    shutil.copytree(root / "labelsTs", tmp_path / "pred")
    report = evaluate_folders(tmp_path / "pred", root / "labelsTs")
    out = tmp_path / "report"
    page = _parse(write_report(report, tmp_path / "pred", root / "labelsTs", out, images_dir=root / "imagesTs"))
    assert [c["name"] for c in page.cases] == ["test_000", "test_001"]  # case names, not file names
    for row in page.cases:
        assert [Path(i["src"]).stem.split("_")[1] for i in row["imgs"]] == ["img", "gt", "pred"]
        assert all((out / i["src"]).is_file() for i in row["imgs"])
    assert "HD95 (mm)" in (out / "index.html").read_text() and report["hd95_unit"] == "mm"
    assert "slice " in (out / "index.html").read_text() and ("class 2", "dice") in {
        (r["scope"], r["metric"]) for r in page.summary}
    (tmp_path / "pred" / "test_001.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"test_001\.nii\.gz"):
        write_report(report, tmp_path / "pred", root / "labelsTs", out)


def test_rewriting_a_report_keeps_the_users_files(folders, monkeypatch):
    import spadfast.evaluation.report as report_folder

    report = evaluate_folders(folders["pred"], folders["gt"])
    out = folders["root"] / "report"
    write_report(report, folders["pred"], folders["gt"], out)
    theirs = {  # beside, in and under the report's own folders, a sub-folder, a hidden file
        "notes.txt": b"my notes", "mine/deep/data.csv": b"1,2", "plots/my_plot.png": b"not spadfast's",
        "thumbs/readme.txt": b"keep", ".hidden": b"h", "report.json.bak": b"{}",
    }
    for rel, data in theirs.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    assert sorted(map(str, report_folder.foreign_entries(out))) == sorted(
        [".hidden", "mine", "notes.txt", "plots/my_plot.png", "report.json.bak", "thumbs/readme.txt"])
    report["cases"] = report["cases"][:2]  # a smaller report: the earlier thumbnails of cases 2..4 go
    write_report(report, folders["pred"], folders["gt"], out)
    assert {rel: (out / rel).read_bytes() for rel in theirs} == theirs
    assert len(_parse(out / "index.html").cases) == 2 and not list((out / "thumbs").glob("4_*.png"))

    real_replace = report_folder.os.replace

    def fail_last_rename(src, dst):  # the rename of the new report into place fails
        if Path(dst) == out and ".spadfast-tmp-" in Path(src).name:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(report_folder.os, "replace", fail_last_rename)
    before = (out / "index.html").read_text()
    with pytest.raises(OSError, match="No space"):
        write_report(evaluate_folders(folders["pred"], folders["gt"]), folders["pred"], folders["gt"], out)
    assert {rel: (out / rel).read_bytes() for rel in theirs} == theirs and (out / "index.html").read_text() == before
    assert [p.name for p in folders["root"].iterdir() if p.name.startswith(".")] == []


def test_cli_checks_report_arguments_before_scoring(folders, monkeypatch, capsys):
    import spadfast.evaluation.evaluate as evaluate_mod
    from spadfast.cli import main as cli_main

    scored, real = [], evaluate_mod.evaluate_folders
    monkeypatch.setattr(evaluate_mod, "evaluate_folders", lambda *a, **k: scored.append(a) or real(*a, **k))
    root = folders["root"]
    foreign = root / "not_a_report"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    partial_images = root / "few_images"
    partial_images.mkdir()
    (partial_images / "c0.png").write_bytes((folders["images"] / "c0.png").read_bytes())
    no_log = root / "run_without_log"
    no_log.mkdir()
    base = ["evaluate", "--pred", str(folders["pred"]), "--gt", str(folders["gt"])]
    bad = {
        "not_a_report": ["--report", str(foreign)],
        "few_images": ["--report", str(root / "r"), "--images", str(partial_images)],
        "run_without_log": ["--report", str(root / "r"), "--run", str(no_log)],
        "--report": ["--run", str(no_log)],
        "c0.png": ["--report", str(folders["gt"] / "c0.png")],
    }
    for needle, extra in bad.items():
        assert cli_main(base + extra) == 2, needle
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err, err
        assert scored == [], f"{needle}: cases were scored before the report arguments were checked"
    assert not (root / "r").exists() and (foreign / "notes.txt").read_text() == "mine"


def test_hd95_unit_in_the_page(folders, tmp_path):
    report = evaluate_folders(folders["pred"], folders["gt"])
    assert "HD95 (px)" in write_report(report, folders["pred"], folders["gt"], tmp_path / "px").read_text()
    spaced = evaluate_folders(folders["pred"], folders["gt"], spacing=(0.5, 0.5))
    assert spaced["hd95_unit"] == "spacing units"
    assert "HD95 (spacing units)" in write_report(spaced, folders["pred"], folders["gt"], tmp_path / "su").read_text()
