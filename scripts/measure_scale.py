"""Training and prediction throughput for 1 and 2 processes on this machine (torchrun, gloo on CPU).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_scale.py --out /tmp/scale

Rows: training steps/s (mean ``steps_per_s`` of the log after the first interval) for world size 1, 2 processes on
one node, and 2 "nodes" of one process each (c10d rendezvous on localhost); prediction images/s for 1 and 2
processes (wall clock of the whole command, start-up included). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True)
    return time.perf_counter() - t0


def _steps_per_s(run: Path) -> float:
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    rates = [r["steps_per_s"] for r in records[1:] if "steps_per_s" in r]
    return sum(rates) / len(rates)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    py, tr = sys.executable, [sys.executable, "-m", "torch.distributed.run"]
    cfg = out / "cfg.json"
    cfg.write_text(json.dumps({"image_size": 32, "base_channels": 16, "channel_mults": [1, 2, 2],
                               "attention_levels": [], "batch_size": 8, "log_every": 20, "device": "cpu",
                               "progress_bar": False, "synthetic_train": 256, "synthetic_val": 4}))
    train = ["-m", "spadfast", "train", "--config", str(cfg), "--steps", str(args.steps), "--overwrite"]
    rows = []
    _run([py, *train, "--out", str(out / "w1")], env)
    rows.append(("train, 1 process", f"{_steps_per_s(out / 'w1'):.2f} steps/s (batch 8 per process)"))
    _run([*tr, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_port()}", *train, "--out",
          str(out / "w2")], env)
    rows.append(("train, 2 processes, one node", f"{_steps_per_s(out / 'w2'):.2f} steps/s (global batch 16)"))
    port = _port()
    agent = [*tr, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
             "--rdzv_id=scale", *train, "--out", str(out / "n2")]
    nodes = [subprocess.Popen(agent, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    for n in nodes:
        n.wait()
    rows.append(("train, 2 nodes x 1 process (localhost)", f"{_steps_per_s(out / 'n2'):.2f} steps/s (global batch 16)"))
    from spadfast.data.synthetic import write_synthetic_folder

    data = write_synthetic_folder(out / "images", 64, 32, seed=0)
    predict = ["-m", "spadfast", "predict", "--checkpoint", str(out / "w1"), "--images", str(data / "images"),
               "--overwrite"]
    t1 = _run([py, *predict, "--out", str(out / "p1")], env)
    t2 = _run([*tr, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_port()}", *predict,
               "--out", str(out / "p2")], env)
    rows.append(("predict 64 images, 1 process", f"{64 / t1:.1f} images/s ({t1:.1f} s wall, start-up included)"))
    rows.append(("predict 64 images, 2 processes", f"{64 / t2:.1f} images/s ({t2:.1f} s wall, start-up included)"))
    print("| run | measured |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
