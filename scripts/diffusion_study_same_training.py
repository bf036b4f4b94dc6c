"""Does a commit train the diffusion study's runs as another does? Train the pilot's baseline (seed 0, nuclei-noisy
fold 0) for 40 steps with the spadfast that ``PYTHONPATH`` selects and print a digest of the model and EMA weights:

    PYTHONPATH=TREE_A python scripts/diffusion_study_same_training.py STUDY   # then with TREE_B; the digests agree

``STUDY`` is the study folder ``scripts/diffusion_study.py prepare`` made.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusion_study as study  # noqa: E402


def main(argv: list[str]) -> int:
    import spadfast
    from spadfast.config import SPADConfig
    from spadfast.train.trainer import SPADTrainer

    torch.set_num_threads(1)
    root = Path(argv[0]) / "data" / "nuclei-noisy" / "fold0"
    cfg = study.run_config("baseline", 0, extra={"train_steps": 40, "val_every": 0, "checkpoint_every": 0,
                                                  "log_every": 10})
    trainer = SPADTrainer(SPADConfig.from_dict(cfg), root / "train", root / "test", out_dir=Path(tempfile.mkdtemp()))
    trainer.fit()
    weights = {**{f"ema.{k}": v for k, v in trainer.ema.state_dict().items()},
               **{f"model.{k}": v for k, v in trainer.model.state_dict().items()}}
    digest = hashlib.sha256()
    for name, tensor in sorted(weights.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    print(json.dumps({"spadfast": spadfast.__file__, "steps": trainer.step, "digest": digest.hexdigest()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
