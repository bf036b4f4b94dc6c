"""One training lane of a study, resumable on a fresh machine: claim the next cell that is neither committed nor
claimed by another lane, train it with the study runner *of the commit the registration fixes*, then score it.

    git worktree add --detach /tmp/study-train 0b4ad69       # the registered training commit (and one for scoring)
    python scripts/diffusion_study.py prepare --out STUDY     # or volume_study.py: the data (deterministic)
    OMP_NUM_THREADS=1 nice -n 10 python scripts/study_lane.py diffusion --out STUDY --lane A \\
        --train-worktree /tmp/study-train --datasets nuclei-clean ambiguous &
    OMP_NUM_THREADS=1 nice -n 10 python scripts/study_lane.py diffusion --out STUDY --lane B ... &   # a second core

Why it exists: a study's run folders live outside the repository and are lost with the machine; only the cells
committed under ``docs/<study>/cells`` survive. ``<study>.py run`` skips the runs of its own ``--out`` folder, so on a
fresh folder it would train committed cells again. This lane skips every cell whose file is committed under
``--cells`` (this checkout's, by default), claims the others one at a time through files in ``OUT/claims`` (several
lanes share one folder without training a cell twice), trains each in a subprocess that imports only
``--train-worktree`` (the registered commit, recorded in the cell as before) and scores it with ``<study>.py
evaluate`` of ``--eval-worktree`` (default: the training one) under a lock, so two lanes never score at once. A lane
restarted with the same ``--lane`` resumes its own unfinished claim from the run's checkpoint. ``OUT/stop_lanes``
(an empty file) makes every lane stop before its next cell. Collect and commit with ``<study>.py collect`` and
``report`` of this checkout.

Cells: ``diffusion``: per data set in the order given, ``diffusion_study.plan([set], PRIMARY_FOLDS, None, variants)``
(seed-major: complete paired units first); ``volume``: seeds x data sets x arms, seed-major. ``--dry-run`` prints
the cells this lane would still train, and stops.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the registered primaries still need when a variant list is not given (docs/diffusion_study/registration.md).
DIFFUSION_VARIANTS = {
    "nuclei-clean": ("baseline", "x0-loss", "supervised"),
    "nuclei-noisy": ("baseline", "x0-loss", "supervised"),
    "ambiguous": ("x0-loss", "supervised", "supervised-m1", "supervised-m2", "supervised-m3", "supervised-m4"),
}


def _in_worktree(worktree: Path, code: str) -> None:
    """Run ``code`` in a fresh interpreter that imports spadfast and the study scripts from ``worktree`` only."""
    env = {**os.environ, "PYTHONPATH": f"{worktree}{os.pathsep}{worktree / 'scripts'}"}
    subprocess.run([sys.executable, "-c", code], cwd=worktree, env=env, check=True)


def diffusion_cells(worktree: Path, datasets: list[str], variants: list[str] | None
                    ) -> list[tuple[tuple, Path]]:
    """(cell, committed cell file) for every cell, from the worktree's own ``plan``: data set by data set in the
    given order (one set complete before the next starts), seed-major within each."""
    out = subprocess.run(
        [sys.executable, "-c",
         "import json, sys, diffusion_study as ds\n"
         "from spadfast.study.ablate import slug\n"
         "table = json.loads(sys.argv[1])\n"
         "cells = [c for d, vs in table.items() for c in ds.plan([d], ds.PRIMARY_FOLDS, None, vs)]\n"
         "print(json.dumps([[*c, slug(c[2])] for c in cells]))",
         json.dumps({d: variants or list(DIFFUSION_VARIANTS[d]) for d in datasets})],
        cwd=worktree, env={**os.environ, "PYTHONPATH": f"{worktree}{os.pathsep}{worktree / 'scripts'}"},
        check=True, capture_output=True, text=True).stdout
    return [((d, k, v, s), Path(d) / f"fold{k}" / slug / f"seed{s}.json") for d, k, v, s, slug in json.loads(out)]


def volume_cells(datasets: list[str], arms: list[str], seeds: list[int]) -> list[tuple[tuple, Path]]:
    return [((d, a, s), Path(d) / a / f"seed{s}.json") for s in seeds for d in datasets for a in arms]


def claim(claims: Path, name: str, lane: str) -> bool:
    """True when this lane may train ``name``: a new claim, or this lane's own unfinished one."""
    path = claims / name
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return path.read_text().strip() == lane
    with os.fdopen(fd, "w") as f:
        f.write(lane)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", choices=["diffusion", "volume"])
    p.add_argument("--out", type=Path, required=True, help="the study folder (data prepared, outside the repository)")
    p.add_argument("--lane", required=True, help="this lane's name (a restarted lane resumes its own claim)")
    p.add_argument("--train-worktree", type=Path, required=True, help="a checkout of the registered training commit")
    p.add_argument("--eval-worktree", type=Path, help="a checkout of the scoring commit (default: the training one)")
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--variants", nargs="+", help="diffusion: default the registered primaries' arms per data set")
    p.add_argument("--arms", nargs="+", help="volume: the arms to train")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="volume: the seeds")
    p.add_argument("--dry-run", action="store_true", help="print the cells left to train (committed ones skipped)")
    p.add_argument("--cells", type=Path, help="committed cells (default: this checkout's docs/<study>_study/cells)")
    args = p.parse_args(argv)
    train_wt, eval_wt = args.train_worktree.resolve(), (args.eval_worktree or args.train_worktree).resolve()
    script = f"{args.study}_study"
    for wt in {train_wt, eval_wt}:
        if not (wt / "scripts" / f"{script}.py").is_file():
            p.error(f"--train-worktree/--eval-worktree {wt}: no scripts/{script}.py (a checkout of the study's commit?)")
    committed = args.cells or ROOT / "docs" / script / "cells"
    out = args.out.resolve()
    if args.study == "diffusion":
        cells = diffusion_cells(train_wt, args.datasets, args.variants)
    else:
        if not args.arms:
            p.error("volume: --arms is required")
        cells = volume_cells(args.datasets, args.arms, args.seeds)
    if args.dry_run:
        left = [("_".join(str(x) for x in cell)) for cell, rel in cells if not (committed / rel).is_file()]
        print(f"{len(left)} of {len(cells)} cells left to train:", *left, sep="\n  ")
        return 0
    claims = out / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    for cell, rel in cells:
        if (committed / rel).is_file():
            continue
        if (out / "stop_lanes").exists():
            print(f"lane {args.lane}: {out / 'stop_lanes'} exists; stopping", flush=True)
            return 0
        name = "_".join(str(x) for x in cell)
        if not claim(claims, name, args.lane):
            continue
        print(f"lane {args.lane}: {name}", flush=True)
        if args.study == "diffusion":
            _in_worktree(train_wt, "import diffusion_study as ds\nfrom pathlib import Path\n"
                                   f"ds.run(Path({str(out)!r}), [{tuple(cell)!r}])")
        else:
            _in_worktree(train_wt, "import volume_study as vs\nfrom pathlib import Path\n"
                                   f"vs.run(Path({str(out)!r}), [{tuple(cell)!r}])")
        with open(out / "eval.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # scoring scans every trained run: one lane at a time
            _in_worktree(eval_wt, f"import {script} as s\nfrom pathlib import Path\ns.evaluate(Path({str(out)!r}))")
        (claims / name).write_text("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
