"""``noise_levels``: a cached-encoder model encodes each training image once and trains its mask at several noise
levels; the loss equals that of the same rows with the image repeated, the encoder sees each image once, resume
stays bit-exact, and the plain UNet / supervised objective refuse it."""

import pytest
import torch

from spadfast import SPADTrainer
from spadfast.models.checkpoint import read_checkpoint

from .helpers import tiny_config


def test_forward_with_repeats_equals_the_repeated_batch():
    trainer = SPADTrainer(tiny_config())
    model = trainer.model.eval()
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 16, 16, generator=gen) * 2 - 1
    x = torch.randn(6, 1, 16, 16, generator=gen)
    t = torch.rand(6, generator=gen) * 999
    inp = torch.cat([x, image.repeat_interleave(3, 0)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(inp, t, repeats=3), model(inp, t), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="groups of repeats"):
        model(inp[:5], t[:5], repeats=3)


def test_loss_equals_the_repeated_batch_and_the_encoder_sees_each_image_once(monkeypatch):
    levels = tiny_config(noise_levels=3, perturb_mode="input")
    plain = tiny_config(perturb_mode="input")
    a, b = SPADTrainer(levels), SPADTrainer(plain)
    b.model.load_state_dict(a.model.state_dict())
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 1, 16, 16, generator=gen) * 2 - 1
    mask = (torch.rand(2, 1, 16, 16, generator=gen) > 0.5).float()
    seen = []
    a.model.enc_stem.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    a.generator.manual_seed(3)
    b.generator.manual_seed(3)
    loss_a = a._loss(image, mask, 0)
    loss_b = b._loss(image.repeat_interleave(3, 0), mask.repeat_interleave(3, 0), 0)
    assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-5)
    assert seen == [2]  # two images encoded, for six denoiser rows


def test_a_run_with_noise_levels_resumes_bit_identically(tmp_path):
    cfg = dict(train_steps=4, noise_levels=2)
    straight = SPADTrainer(tiny_config(**cfg))
    straight.fit()
    straight.save(tmp_path / "a")
    half = SPADTrainer(tiny_config(**cfg))
    half.fit(2)
    half.save(tmp_path / "b")
    resumed = SPADTrainer.from_checkpoint(tmp_path / "b")
    resumed.fit()
    resumed.save(tmp_path / "b")
    a, b = read_checkpoint(tmp_path / "a")[0], read_checkpoint(tmp_path / "b")[0]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("bad", [dict(model_type="unet"), dict(objective="supervised"), dict(noise_levels=0)])
def test_refused_where_it_cannot_help(bad):
    with pytest.raises(ValueError, match="noise_levels"):
        tiny_config(**{"noise_levels": 2, **bad})
