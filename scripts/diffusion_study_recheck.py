"""Re-score an evaluated diffusion-study run with this checkout's evaluation code and compare every case metric with
its stored ``study_eval.json`` (e.g. the shared sampling pass against cells sampled one by one).

    OMP_NUM_THREADS=1 python scripts/diffusion_study_recheck.py --out STUDY RUN_DIR [--write docs/diffusion_study/checks]

Prints (and with ``--write`` saves as ``<variant>_seed<s>_recheck.json``) the largest absolute difference per metric
over every grid cell and case, both evaluation times, and the commit that re-scored it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusion_study as study  # noqa: E402


def recheck(out: Path, run_dir: Path) -> dict:
    import torch

    from spadfast.study import grid_eval

    torch.set_num_threads(1)
    stored = json.loads((run_dir / study.EVAL_FILE).read_text())
    cell = json.loads((run_dir / study.CELL_FILE).read_text())
    d = cell["data"]
    test = out / "data" / d / (f"fold{cell['fold']}" if d in study.NUCLEI else "") / "test"
    supervised = cell["variant"].startswith("supervised")
    kwargs, _ = study._grid_kwargs(grid_eval.evaluate_checkpoint, d, test, diffusion=not supervised)
    t0 = time.perf_counter()
    again = grid_eval.evaluate_checkpoint(run_dir, test / "images", test / "masks",
                                          steps=(1,) if supervised else study.EVAL_STEPS,
                                          ensembles=(1,) if supervised else study.EVAL_MEMBERS, **kwargs)
    seconds = time.perf_counter() - t0
    worst: dict[str, float] = {}
    for a, b in zip(stored["grid"], again, strict=True):
        if (a["steps"], a["ensemble"], a["step_fusion"]) != (b["steps"], b["ensemble"], b["step_fusion"]):
            raise ValueError(f"{run_dir}: the grids differ in order or content: {a['steps'], a['ensemble']} vs "
                             f"{b['steps'], b['ensemble']}")
        for ca, cb in zip(a["cases"], b["cases"], strict=True):
            for k, v in ca.items():
                if k != "name":
                    same = v == cb[k] or (np.isnan(v) and np.isnan(cb[k]))
                    worst[k] = max(worst.get(k, 0.0), 0.0 if same else abs(v - cb[k]))
    return {"run": f"{cell['data']}/fold{cell['fold']}/{cell['variant']}/seed{cell['seed']}",
            "stored_evaluated_at": stored["evaluated_at"], "stored_seconds": round(stored["seconds"], 1),
            "recheck_seconds": round(seconds, 1), "rechecked_at": study._commit(), "max_abs_diff": worst}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--write", type=Path)
    args = p.parse_args(argv)
    result = recheck(args.out, args.run)
    print(json.dumps(result, indent=1))
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        name = result["run"].split("/")
        (args.write / f"{name[2]}_seed{name[3][4:]}_recheck.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
