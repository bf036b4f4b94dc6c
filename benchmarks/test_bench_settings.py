"""Per-image latency of sampling settings (DDIM steps x members x step fusion) on the diffusion study's images.

Group ``settings``: one 128x512 held-out strip of the study (a synthetic stand-in of the same size: timing does not
depend on the pixels or the weights), segmented whole at native resolution with the study's model (preset
``cpu-small``: 32 px windows, the cached-encoder UNet, the config's ``tile_overlap``) through
:func:`spadfast.infer.sliding_window.segment_image`. Providers are settings ``<steps>x<members>-<fusion>``:

- the library default (``SPADConfig.sample_steps`` x ``SPADConfig.ensemble``, ``SPADConfig.step_fusion``) and
  ``5x5-none``, the default before the diffusion study;
- ``1x1-none``: one network pass per window, what a supervised network costs;
- the settings the diffusion study compares (docs/diffusion_study/registration.md) and, once the pilot has chosen
  (``docs/diffusion_study/choice.json``), the best variant's best setting as ``chosen-<...>``.

Each row records ``steps``, ``members``, ``step_fusion``, ``network_passes`` (steps x members per window),
``ratio_to_default`` and ``ratio_to_previous_default`` (that setting's mean time over this row's). The Dice of each
setting is the study's (docs/diffusion_study.md), not measured here: a benchmark model is untrained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from benchutils import record_throughput, sync

from spadfast.config import SPADConfig
from spadfast.infer.sliding_window import segment_image
from spadfast.train.trainer import SPADTrainer

STRIP = (128, 512)
DEFAULT = (SPADConfig.sample_steps, SPADConfig.ensemble, SPADConfig.step_fusion)
# The default before the diffusion study (issue 31.6 compares the new default with it): kept as a row whatever the
# library default becomes.
PREVIOUS_DEFAULT = (5, 5, "none")
SETTINGS = list(dict.fromkeys([DEFAULT, PREVIOUS_DEFAULT, (1, 1, "none"), (1, 5, "none"), (2, 5, "none"),
                               (5, 5, "mean"), (10, 1, "none"), (10, 5, "uncertainty")]))
CHOICE = Path(__file__).resolve().parents[1] / "docs" / "diffusion_study" / "choice.json"
_REFERENCE_MEANS: dict[str, float] = {}  # "default" / "previous_default": that row's mean seconds


def _chosen() -> list[tuple[int, int, str]]:
    """The pilot's chosen setting of its best variant, when the pilot has chosen one."""
    if not CHOICE.is_file():
        return []
    choice = json.loads(CHOICE.read_text())
    best = choice.get("best_variant")
    setting = choice.get("settings", {}).get(best) if best else None
    return [(int(setting["steps"]), int(setting["members"]), str(setting["fusion"]))] if setting else []


def _id(setting: tuple[int, int, str]) -> str:
    return f"{setting[0]}x{setting[1]}-{setting[2]}"


@pytest.mark.parametrize("setting", [*(pytest.param(s, id=_id(s)) for s in SETTINGS),
                                     *(pytest.param(s, id=f"chosen-{_id(s)}") for s in _chosen())])
def test_bench_settings(benchmark, setting, base_info, device):
    steps, members, fusion = setting
    cfg = SPADConfig.preset("cpu-small", device=str(device), progress_bar=False, synthetic_train=2, synthetic_val=1,
                            cuda_graph=False, step_fusion=fusion)
    trainer = SPADTrainer(cfg)
    image = torch.rand(1, *STRIP, generator=torch.Generator().manual_seed(0)) * 2 - 1
    benchmark.group = f"settings-{STRIP[0]}x{STRIP[1]}-{cfg.model_type}-{cfg.image_size}px-windows"
    benchmark.extra_info.update(base_info, provider=_id(setting), steps=steps, members=members, step_fusion=fusion,
                                network_passes=steps * members, chosen=setting in _chosen())

    def timed():
        out = segment_image(trainer, image, "bench", steps=steps, ensemble=members)
        sync(device)
        return out

    benchmark.pedantic(timed, rounds=2, iterations=1, warmup_rounds=1)
    record_throughput(benchmark, None, device)
    mean = benchmark.extra_info.get("mean_s")
    if mean:
        for name, reference in (("default", DEFAULT), ("previous_default", PREVIOUS_DEFAULT)):
            if setting == reference:
                _REFERENCE_MEANS[name] = mean
            known = _REFERENCE_MEANS.get(name)
            benchmark.extra_info[f"ratio_to_{name}"] = round(known / mean, 2) if known else None
        print(f"\n{benchmark.group} {_id(setting)}: {mean:.3f} s/image, ratio_to_default "
              f"{benchmark.extra_info['ratio_to_default'] or 'n/a'}, ratio_to_previous_default "
              f"{benchmark.extra_info['ratio_to_previous_default'] or 'n/a'}")
