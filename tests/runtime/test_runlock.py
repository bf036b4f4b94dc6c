"""The run-folder lock: a second ``train`` into a folder in use is refused, a crashed run's lock is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spadfast.cli import main
from spadfast.runtime import runlock
from spadfast.runtime.runlock import LOCK_NAME, RunBusyError, hold_run_lock

from ..helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _spadfast(*argv: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "spadfast", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, **kwargs)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line
            and not line.startswith("  ")]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _write_lock(folder: Path, **record) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    lock.write_text(json.dumps({"host": socket.gethostname(), "started": "2020-01-01T00:00:00", **record}))
    return lock


def test_second_train_into_a_busy_folder_is_refused_and_a_killed_run_is_taken_over(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config(log_every=1).to_dict()))
    run = tmp_path / "run"
    first = _spadfast("train", "--out", str(run), "--steps", "1000000", "--config", str(cfg))
    try:
        deadline = time.monotonic() + 120
        while not (run / "log.jsonl").is_file():  # the first run is training
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        holder = json.loads((run / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        variants = [[], ["--overwrite"], ["--resume"]]
        others = [_spadfast("train", "--out", str(run), "--config", str(cfg), *extra) if extra != ["--resume"]
                  else _spadfast("train", "--out", str(run), *extra) for extra in variants]
        for extra, other in zip(variants, others):
            _, err = other.communicate(timeout=300)
            lines = _error_lines(err)
            assert other.returncode == 2, (extra, err[-2000:])
            assert len(lines) == 1 and "in use" in lines[0] and str(run.resolve()) in lines[0], (extra, err)
            assert f"pid {first.pid}" in lines[0]
        assert first.poll() is None  # refused while the first run was still training
        assert json.loads((run / LOCK_NAME).read_text()) == holder
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: the lock stays behind
        first.communicate()
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # one writer

    assert (run / LOCK_NAME).is_file()
    again = _spadfast("train", "--out", str(run), "--overwrite", "--steps", "2", "--config", str(cfg))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert "taking over" in err and f"pid {first.pid}" in err and "no longer runs" in err
    assert not (run / LOCK_NAME).exists()  # released on exit
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_fake_stale_lock_is_reported_and_taken_over(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config(train_steps=1).to_dict()))
    run = tmp_path / "run"
    dead = _dead_pid()
    _write_lock(run, pid=dead)
    with pytest.warns(UserWarning, match=f"taking over a lock left by a process that no longer runs .pid {dead}"):
        assert main(["train", "--out", str(run), "--config", str(cfg)]) == 0
    assert (run / "checkpoint.safetensors").is_file() and not (run / LOCK_NAME).exists()


@pytest.mark.parametrize("case", ["live-pid", "other-host", "being-written"])
def test_lock_of_a_live_or_unverifiable_process_is_refused(tmp_path, case, capsys):
    folder = tmp_path / "run"
    if case == "live-pid":
        lock = _write_lock(folder, pid=os.getppid())
        expected = f"pid {os.getppid()}"
    elif case == "other-host":
        lock = _write_lock(folder, pid=1, host="gpu-node-17")
        expected = "'gpu-node-17'"
    else:
        folder.mkdir()
        lock = folder / LOCK_NAME
        lock.write_text("")  # created, record not yet written
        expected = "right now"
    before = lock.read_bytes()
    with pytest.raises(RunBusyError, match=expected) as info:
        with hold_run_lock(folder, "--out"):
            pass
    assert str(folder.resolve()) in str(info.value) and "\n" not in str(info.value)
    assert lock.read_bytes() == before
    assert main(["train", "--out", str(folder), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err and str(folder.resolve()) in err
    assert lock.read_bytes() == before


def test_reused_pid_and_old_damaged_lock_are_stale(tmp_path):
    reused = _write_lock(tmp_path / "a", pid=os.getpid(), pid_start="1")  # this pid, but another process's start
    with pytest.warns(UserWarning, match="no longer runs"):
        with hold_run_lock(tmp_path / "a"):
            assert json.loads(reused.read_text())["pid_start"] != "1"
    damaged = tmp_path / "b" / LOCK_NAME
    damaged.parent.mkdir()
    damaged.write_text("{")
    os.utime(damaged, (time.time() - 3600,) * 2)
    with pytest.warns(UserWarning, match="empty or damaged"):
        with hold_run_lock(tmp_path / "b"):
            pass
    assert not reused.exists() and not damaged.exists()


def test_lock_is_reentrant_released_on_error_and_removes_a_folder_it_created(tmp_path):
    folder = tmp_path / "new" / "run"
    with hold_run_lock(folder) as lock:
        with hold_run_lock(folder) as inner:  # the CLI holds it around fit, which takes it again
            assert inner == lock
        assert lock.is_file()
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not lock.exists() and not folder.exists() and folder.parent.is_dir()
    with pytest.raises(KeyError):
        with hold_run_lock(tmp_path / "kept"):
            (tmp_path / "kept" / "x.txt").write_text("output")
            raise KeyError("boom")
    assert not (tmp_path / "kept" / LOCK_NAME).exists() and (tmp_path / "kept" / "x.txt").is_file()
    with hold_run_lock(None) as nothing:  # a rank that does not write the run
        assert nothing is None
    assert runlock._HELD == {}


def test_fit_and_save_refuse_a_folder_another_process_trains_in(tmp_path):
    from spadfast import SPADTrainer

    _write_lock(tmp_path / "run", pid=os.getppid())
    trainer = SPADTrainer(tiny_config(train_steps=1), out_dir=tmp_path / "run")
    with pytest.raises(RunBusyError, match="out_dir"):
        trainer.fit()
    assert trainer.step == 0
    with pytest.raises(RunBusyError, match="checkpoint folder"):
        trainer.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME]
