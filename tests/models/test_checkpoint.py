import pytest
import torch
from safetensors.torch import save_file

import spadfast.models.checkpoint as ckpt


def test_round_trip_and_directory_form(tmp_path):
    tensors = {"a": torch.arange(6.0).view(2, 3), "s": torch.tensor(3.0), "u": torch.randint(0, 255, (5,),
                                                                                        dtype=torch.uint8)}
    written = ckpt.write_checkpoint(tmp_path / "run", tensors, {"step": 4})
    assert written == tmp_path / "run" / ckpt.CHECKPOINT_NAME
    back, meta = ckpt.read_checkpoint(tmp_path / "run")
    assert meta == {"step": 4}
    assert all(torch.equal(back[k], v) for k, v in tensors.items())


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.write_checkpoint(tmp_path, {"a": torch.ones(3)}, {"step": 1})

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError):
        ckpt.write_checkpoint(tmp_path, {"a": torch.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    back, meta = ckpt.read_checkpoint(tmp_path)
    assert meta["step"] == 1 and torch.equal(back["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.CHECKPOINT_NAME]  # no temp file left behind


def test_corrupt_missing_and_foreign_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.read_checkpoint(tmp_path / "nothing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="bad.safetensors.*corrupt"):
        ckpt.read_checkpoint(bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign))
    with pytest.raises(ValueError, match="foreign.safetensors.*not a spadfast checkpoint"):
        ckpt.read_checkpoint(foreign)
    good = ckpt.write_checkpoint(tmp_path / "t.safetensors", {"a": torch.ones(1000)}, {})
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="t.safetensors"):
        ckpt.read_checkpoint(good)


def test_tied_weights_are_saved_and_stay_tied(tmp_path):
    from spadfast import SPADTrainer

    from ..helpers import tiny_config

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(2, 1, 3, padding=1)
            self.b = torch.nn.Conv2d(2, 1, 3, padding=1)
            self.b.weight = self.a.weight

        def forward(self, x, t):
            return self.a(x) + self.b(x) * 0.5

    trainer = SPADTrainer(tiny_config(), model=Tied())
    trainer.fit(1)
    trainer.save(tmp_path)
    resumed = SPADTrainer.from_checkpoint(tmp_path, model=Tied())
    assert resumed.model.a.weight is resumed.model.b.weight
    assert torch.equal(resumed.model.a.weight, trainer.model.a.weight)


def _full_disk(tensors, filename, metadata=None):
    """``save_file`` on a disk that fills up halfway: what safetensors raises then."""
    from safetensors import SafetensorError

    with open(filename, "wb") as f:
        f.write(b"\0" * 4096)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_full_disk_during_save_keeps_the_previous_checkpoint_and_the_trainer_can_retry(tmp_path, monkeypatch):
    import errno

    from spadfast import SPADTrainer

    from ..helpers import tiny_config

    trainer = SPADTrainer(tiny_config(), out_dir=tmp_path)
    trainer.fit(2)
    path = trainer.save(tmp_path)
    before = path.read_bytes()
    trainer.fit(2)
    monkeypatch.setattr(ckpt, "save_file", _full_disk)
    with pytest.raises(OSError) as info:
        trainer.save(tmp_path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert "No space left on device" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.CHECKPOINT_NAME, "log.jsonl"]  # no temp, no lock
    monkeypatch.undo()  # the disk has room again
    trainer.save(tmp_path)
    resumed = SPADTrainer.from_checkpoint(tmp_path)
    assert resumed.step == 4
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.parameters(), trainer.model.parameters()))


def test_serializer_failure_without_an_os_error_is_a_value_error(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def refuse(tensors, filename, metadata=None):
        raise SafetensorError("some internal serializer failure")

    monkeypatch.setattr(ckpt, "save_file", refuse)
    with pytest.raises(ValueError, match="cannot serialize the checkpoint"):
        ckpt.write_checkpoint(tmp_path, {"a": torch.ones(2)}, {})
    assert list(tmp_path.iterdir()) == []


# (config key, a value that keeps every tensor's shape but gives the weights another meaning)
OTHER_RUN = [("prediction_type", "epsilon"), ("prediction_type", "v_prediction"), ("beta_schedule", "cosine"),
             ("num_train_timesteps", 500), ("beta_end", 0.03)]


@pytest.mark.parametrize("key,value", OTHER_RUN, ids=[f"{k}={v}" for k, v in OTHER_RUN])
def test_load_state_refuses_a_checkpoint_of_another_run_kind(tmp_path, key, value):
    from spadfast import SPADTrainer

    from ..helpers import tiny_config

    saved = SPADTrainer(tiny_config(prediction_type="sample"))
    saved.save(tmp_path)
    tensors, meta = ckpt.read_checkpoint(tmp_path)
    other = SPADTrainer(tiny_config(**{"prediction_type": "sample", key: value}))
    with pytest.raises(ValueError, match=f"`{key}`") as info:
        other.load_state(tensors, meta, "ckpt")
    assert repr(meta["config"][key]) in str(info.value) and repr(value) in str(info.value)
    SPADTrainer(tiny_config(prediction_type="sample")).load_state(tensors, meta, "ckpt")  # the same kind loads
