import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spadfast import SPADTrainer
from spadfast.models.checkpoint import read_checkpoint

from ..helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # torchrun and DDP processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config(log_every=1).to_dict()))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "spadfast", "train", "--out", str(run), "--steps", "3",
           "--config", str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    files = sorted(p.name for p in run.iterdir())
    assert files == ["checkpoint.safetensors", "log.jsonl"]  # rank 0 only, no leftover temp files
    logs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3]  # one writer
    tensors, meta = read_checkpoint(run)
    assert meta["step"] == 3 and meta["world_size"] == 2
    trainer = SPADTrainer.from_checkpoint(run)
    assert trainer.step == 3
    assert torch.isfinite(trainer.sample(torch.zeros(1, 1, 16, 16), steps=2)).all()


SCRIPT = """
import json, sys
import torch, torch.distributed as dist
sys.path.insert(0, {root!r})
from tests.helpers import tiny_config
from spadfast import SPADTrainer
trainer = SPADTrainer(tiny_config())
trainer.fit(2)
flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
gathered = [None, None]
dist.all_gather_object(gathered, (flat.tolist(), trainer.rank))
if trainer.rank == 0:
    a, b = gathered[0][0], gathered[1][0]
    json.dump({{"equal": a == b, "ranks": sorted(g[1] for g in gathered)}}, open({out!r}, "w"))
from spadfast.runtime.distributed import exit_process, shutdown
shutdown()
exit_process(0)  # torch's C++ teardown at interpreter exit sometimes aborts a rank
"""


def test_ddp_keeps_ranks_in_sync(tmp_path):
    out = tmp_path / "result.json"
    script = tmp_path / "ddp_sync.py"
    script.write_text(SCRIPT.format(root=str(ROOT), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result == {"equal": True, "ranks": [0, 1]}


RESUME_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import torch.distributed as dist
from tests.helpers import tiny_config
from spadfast import SPADTrainer
mode, out = sys.argv[1], sys.argv[2]
if mode == "resume":
    trainer = SPADTrainer.from_checkpoint(sys.argv[3])
    trainer.fit(2)
else:
    trainer = SPADTrainer(tiny_config(dropout=0.1))
    trainer.fit(4 if mode == "straight" else 2)
trainer.save(out)
from spadfast.runtime.distributed import exit_process, shutdown
shutdown()
exit_process(0)  # torch's C++ teardown at interpreter exit sometimes aborts a rank
"""


def test_ddp_resume_is_bit_exact(tmp_path):
    script = tmp_path / "ddp_resume.py"
    script.write_text(RESUME_SCRIPT.format(root=str(ROOT)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(*args):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", str(script), *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]

    launch("straight", tmp_path / "a")
    launch("half", tmp_path / "b")
    launch("resume", tmp_path / "c", tmp_path / "b")
    straight, _ = read_checkpoint(tmp_path / "a")
    resumed, meta = read_checkpoint(tmp_path / "c")
    assert meta["step"] == 4 and straight.keys() == resumed.keys()
    assert {k for k in straight if k.startswith("rng.rank1.")}  # every rank's random streams are saved
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


def test_torchrun_predict_splits_the_files_and_matches_one_process(tmp_path):
    from spadfast.data.synthetic import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data", 7, 16, seed=3)
    trainer = SPADTrainer(tiny_config(train_steps=1))
    trainer.fit()
    trainer.save(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    predict = ["-m", "spadfast", "predict", "--checkpoint", str(tmp_path / "run"), "--images", str(data / "images"),
               "--steps", "2", "--ensemble", "2", "--uncertainty"]
    one = subprocess.run([sys.executable, *predict, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", *predict, "--out", str(tmp_path / "two")]
    two = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-4000:]
    assert two.stdout.count("spadfast: wrote 7 masks") == 1  # one summary, counting every rank's files
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(files) == 14 and files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.png"))
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_two_nodes_of_one_process_equal_one_node_of_two(tmp_path):
    """c10d rendezvous, two torchrun agents on localhost sharing --out (a shared file system): only global rank 0
    writes, and the weights equal a one-node two-process run bit for bit."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config(log_every=1, dropout=0.1).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = ["-m", "spadfast", "train", "--steps", "3", "--config", str(cfg)]
    one_node = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={_free_port()}", *train, "--out", str(tmp_path / "one")]
    proc = subprocess.run(one_node, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    port = _free_port()
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
             f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=spadfast-test", *train, "--out", str(tmp_path / "two")]
    nodes = [subprocess.Popen(agent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for _ in range(2)]
    results = [n.communicate(timeout=300) for n in nodes]
    for n, (out, err) in zip(nodes, results):
        assert n.returncode == 0, err[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.safetensors", "log.jsonl"]
    a, _ = read_checkpoint(tmp_path / "one")
    b, meta = read_checkpoint(tmp_path / "two")
    assert meta["world_size"] == 2
    weights = [k for k in a if k.startswith(("model.", "ema."))]
    assert weights and [k for k in weights if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("script", ["train.sbatch", "predict.sbatch"])
def test_slurm_recipes_are_valid_bash(script):
    path = ROOT / "scripts" / "slurm" / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    assert "torchrun" in text and "-m spadfast" in text
    if script == "train.sbatch":
        assert "--signal=B:USR1@" in text and "--requeue" in text and "-eq 3" in text


def _label_maps(folder: Path, seed: int, sizes: list[tuple[int, int]]) -> None:
    import cv2
    import numpy as np

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        labels = np.zeros((h, w), np.uint8)
        for value in (1, 2, 3):
            y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
            labels[y:y + rng.integers(3, 7), x:x + rng.integers(3, 7)] = value
        cv2.imwrite(str(folder / f"case{i}.png"), labels)


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}", "-m", "spadfast", *args]


def test_torchrun_evaluate_scores_shares_and_writes_one_report(tmp_path):
    sizes = [(20 + i, 24 + 2 * i) for i in range(5)]
    _label_maps(tmp_path / "gt", 0, sizes)
    _label_maps(tmp_path / "pred", 1, sizes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    evaluate = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    one = subprocess.run([sys.executable, "-m", "spadfast", *evaluate, "--json", str(tmp_path / "one.json")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(_torchrun([*evaluate, "--json", str(tmp_path / "two.json"), "--report",
                                    str(tmp_path / "report")]), capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-4000:]
    assert (tmp_path / "two.json").read_text() == (tmp_path / "one.json").read_text()
    assert json.loads((tmp_path / "one.json").read_text())["classes"].keys() == {"1", "2", "3"}
    assert two.stdout.count("spadfast evaluate: report") == 1 and (tmp_path / "report" / "index.html").is_file()
    assert two.stdout.count("case4.png") == 1  # one table, printed by rank 0


def test_torchrun_evaluate_error_on_one_rank_stops_both_with_one_message(tmp_path):
    _label_maps(tmp_path / "gt", 0, [(20, 20)] * 4)
    _label_maps(tmp_path / "pred", 1, [(20, 20)] * 3 + [(20, 22)])  # case3: rank 1's share
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(_torchrun(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]),
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode != 0
    assert "case3.png" in proc.stderr and "is 22x20 but" in proc.stderr
