"""Small builders shared by the trainer, sampler and CLI tests."""

from spadfast import SPADConfig


def tiny_config(**overrides) -> SPADConfig:
    """A model and run small enough for CPU unit tests (seconds, not minutes)."""
    base = dict(
        image_size=16, base_channels=8, channel_mults=(1, 2), attention_levels=(), num_res_blocks=1,
        train_steps=6, batch_size=3, synthetic_train=7, synthetic_val=3, progress_bar=False, device="cpu",
        sample_steps=3, ensemble=2, log_every=2, warmup_steps=2,
    )
    base.update(overrides)
    return SPADConfig(**base)
