"""scripts/study_lane.py against a stand-in worktree whose study runner records what it was asked to do: committed
cells are skipped, other lanes' claims are left alone, a lane resumes its own claim, every trained cell is scored,
``stop_lanes`` stops a lane, and a worktree without the runner is refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LANE = ROOT / "scripts" / "study_lane.py"

# a runner's run/evaluate that record their calls; evaluate writes EVAL_LOG (which tree scored is visible)
FAKE_RUNNER = """
import json
from pathlib import Path
def run(out, cells):
    with open(Path(out) / "trained.jsonl", "a") as f:
        f.write(json.dumps(cells) + "\\n")
def evaluate(out):
    with open(Path(out) / "EVAL_LOG", "a") as f:
        f.write("x\\n")
"""
FAKE_DIFFUSION = FAKE_RUNNER.replace("EVAL_LOG", "evaluated.txt") + """
PRIMARY_FOLDS = (1, 2)
def plan(datasets, folds, seeds, variants):
    return [(d, k, v, s) for s in range(2) for d in datasets for k in folds for v in variants]
"""
FAKE_VOLUME = FAKE_RUNNER.replace("EVAL_LOG", "evaluated_by_eval_tree.txt")


def _worktree(root: Path, script: str, body: str) -> Path:
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / f"{script}.py").write_text(textwrap.dedent(body))
    study = root / "spadfast" / "study"
    study.mkdir(parents=True)
    (root / "spadfast" / "__init__.py").write_text("")
    (study / "__init__.py").write_text("")
    (study / "ablate.py").write_text("def slug(name):\n    return name.replace(' ', '-')\n")
    return root


def _lane(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LANE), *args], capture_output=True, text=True, timeout=120)


def _trained(out: Path) -> list[list]:
    path = out / "trained.jsonl"
    return [json.loads(line)[0] for line in path.read_text().splitlines()] if path.is_file() else []


def test_diffusion_lane_skips_committed_and_claimed_cells_and_scores_each(tmp_path):
    wt = _worktree(tmp_path / "wt", "diffusion_study", FAKE_DIFFUSION)
    out, cells = tmp_path / "study", tmp_path / "cells"
    (cells / "ambiguous" / "fold1" / "b").mkdir(parents=True)
    (cells / "ambiguous" / "fold1" / "b" / "seed0.json").write_text("{}")  # committed: skipped
    (out / "claims").mkdir(parents=True)
    (out / "claims" / "ambiguous_2_a_0").write_text("other")  # another lane's: left alone
    (out / "claims" / "ambiguous_1_a_1").write_text("A")  # this lane's unfinished claim: resumed
    (out / "claims" / "ambiguous_2_b_1").write_text("done")  # finished (not yet committed): skipped
    common = ["diffusion", "--out", str(out), "--lane", "A", "--train-worktree", str(wt), "--datasets", "ambiguous",
              "--variants", "a", "b", "--cells", str(cells)]
    dry = _lane(*common, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "7 of 8 cells left to train:"
    res = _lane(*common)
    assert res.returncode == 0, res.stderr
    assert _trained(out) == [["ambiguous", 1, "a", 0], ["ambiguous", 2, "b", 0], ["ambiguous", 1, "a", 1],
                             ["ambiguous", 1, "b", 1], ["ambiguous", 2, "a", 1]]
    assert (out / "evaluated.txt").read_text().count("x") == 5
    assert (out / "claims" / "ambiguous_2_a_0").read_text() == "other"
    assert (out / "claims" / "ambiguous_1_a_1").read_text() == "done"
    again = _lane(*common)  # everything left is claimed or done: nothing more is trained
    assert again.returncode == 0 and len(_trained(out)) == 5


def test_volume_lane_trains_with_one_tree_and_scores_with_the_other(tmp_path):
    train = _worktree(tmp_path / "train", "volume_study", FAKE_VOLUME)
    score = _worktree(tmp_path / "score", "volume_study", FAKE_VOLUME.replace("evaluated_by_eval_tree",
                                                                                "evaluated_by_score_tree"))
    out = tmp_path / "study"
    res = _lane("volume", "--out", str(out), "--lane", "A", "--train-worktree", str(train), "--eval-worktree",
                str(score), "--datasets", "brain", "ct", "--arms", "3d", "--seeds", "0", "1",
                "--cells", str(tmp_path / "none"))
    assert res.returncode == 0, res.stderr
    assert _trained(out) == [["brain", "3d", 0], ["ct", "3d", 0], ["brain", "3d", 1], ["ct", "3d", 1]]
    assert (out / "evaluated_by_score_tree.txt").read_text().count("x") == 4
    assert not (out / "evaluated_by_eval_tree.txt").exists()


def test_stop_file_stops_the_lane_before_its_next_cell(tmp_path):
    wt = _worktree(tmp_path / "wt", "diffusion_study", FAKE_DIFFUSION)
    out = tmp_path / "study"
    out.mkdir()
    (out / "stop_lanes").write_text("")
    res = _lane("diffusion", "--out", str(out), "--lane", "A", "--train-worktree", str(wt), "--datasets",
                "ambiguous", "--variants", "a", "--cells", str(tmp_path / "none"))
    assert res.returncode == 0 and "stopping" in res.stdout
    assert _trained(out) == []


@pytest.mark.parametrize("study,extra", [("diffusion", []), ("volume", ["--arms", "3d"])])
def test_a_worktree_without_the_runner_is_refused_in_one_line(tmp_path, study, extra):
    (tmp_path / "empty").mkdir()
    res = _lane(study, "--out", str(tmp_path / "study"), "--lane", "A", "--train-worktree", str(tmp_path / "empty"),
                "--datasets", "x", *extra)
    assert res.returncode == 2
    assert f"no scripts/{study}_study.py" in res.stderr
    assert not (tmp_path / "study").exists()


def test_volume_lane_needs_its_arms(tmp_path):
    wt = _worktree(tmp_path / "wt", "volume_study", FAKE_VOLUME)
    res = _lane("volume", "--out", str(tmp_path / "study"), "--lane", "A", "--train-worktree", str(wt),
                "--datasets", "ct")
    assert res.returncode == 2 and "--arms is required" in res.stderr
