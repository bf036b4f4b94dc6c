import pytest
import torch
from safetensors.torch import save_file

import spadfast.checkpoint as ckpt


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

    from .helpers import tiny_config

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
