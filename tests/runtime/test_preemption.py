"""A scheduler's signal ends training cleanly: the step finishes, the checkpoint is written, the CLI exits with its
own status and one line, and --resume ends bit-identical to a run that was never stopped."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spadfast import SPADTrainer
from spadfast.models.checkpoint import read_checkpoint
from spadfast.runtime.preemption import EXIT_STOPPED, StopSignals, check_signal_names

from ..helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def test_stop_signals_set_a_flag_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals(("SIGTERM", "SIGUSR1")) as stops:
        assert stops.requested(False, torch.device("cpu")) is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stops.requested(False, torch.device("cpu")) == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal keeps the first name
        assert stops.received == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
    with pytest.raises(ValueError, match="SIGKILL"):
        check_signal_names(["SIGKILL"])
    with pytest.raises(ValueError, match="stop_signals"):
        tiny_config(stop_signals=["SIGNOPE"])


def _tensors(path):
    return read_checkpoint(path)[0]


def test_a_signalled_fit_saves_its_step_and_resumes_bit_identically(tmp_path, monkeypatch):
    cfg = dict(train_steps=6, dropout=0.1)
    straight = SPADTrainer(tiny_config(**cfg), out_dir=tmp_path / "a")
    straight.fit()
    straight.save(tmp_path / "a")

    stopped = SPADTrainer(tiny_config(**cfg), out_dir=tmp_path / "b")
    real_step = stopped.train_step

    def step_then_signal(batches):
        out = real_step(batches)
        if stopped.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(stopped, "train_step", step_then_signal)
    stopped.fit()
    assert stopped.stopped_by == "SIGTERM" and stopped.step == 3
    assert read_checkpoint(tmp_path / "b")[1]["step"] == 3
    resumed = SPADTrainer.from_checkpoint(tmp_path / "b", out_dir=tmp_path / "b")
    resumed.fit()
    resumed.save(tmp_path / "b")
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.slow
def test_cli_stops_on_sigterm_with_its_own_status_and_resumes(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config(log_every=1, train_steps=40).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "spadfast", "train", "--config", str(cfg)]
    subprocess.run([*base, "--out", str(tmp_path / "straight")], check=True, cwd=ROOT, env=env, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen([*base, "--out", str(run)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = run / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED, err[-2000:]
    step = read_checkpoint(run)[1]["step"]
    assert f"stopped at step {step} by SIGTERM" in out and "--resume" in out and 3 <= step < 40
    subprocess.run([*base[:4], "--out", str(run), "--resume"], check=True, cwd=ROOT, env=env, capture_output=True)
    a, b = _tensors(tmp_path / "straight"), _tensors(run)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_ddp_checks_the_stop_signal_at_log_steps_only(tmp_path, monkeypatch):
    """Issue 29.9: under DDP (a real one-process gloo group) the stop check is a collective, so it runs at log steps
    only: a signal after step 4 with ``log_every=3`` stops every rank at step 6, with the checkpoint of step 6, after
    two all-reduces in eight steps' worth of fit (one per step before)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        trainer = SPADTrainer(tiny_config(train_steps=8, log_every=3, val_every=0), out_dir=tmp_path / "run")
        assert trainer.distributed
        reductions = []
        real_all_reduce = dist.all_reduce

        def counting_all_reduce(tensor, *args, **kwargs):
            reductions.append(trainer.step)
            return real_all_reduce(tensor, *args, **kwargs)

        monkeypatch.setattr(dist, "all_reduce", counting_all_reduce)
        real_step = trainer.train_step

        def step_then_signal(batches):
            out = real_step(batches)
            if trainer.step == 4:
                os.kill(os.getpid(), signal.SIGUSR1)
            return out

        monkeypatch.setattr(trainer, "train_step", step_then_signal)
        trainer.fit()
        assert (trainer.stopped_by, trainer.step) == ("SIGUSR1", 6)
        assert reductions == [3, 6]
        assert read_checkpoint(tmp_path / "run")[1]["step"] == 6
    finally:
        dist.destroy_process_group()
