"""spadfast: fast Structure- and Progress-Aware Diffusion (SPAD) for medical image segmentation."""

__version__ = "0.1.0"

from . import metrics, ops, reference, schedule  # noqa: E402
from .config import SPADConfig  # noqa: E402
from .perturb import PerturbConfig, spad_perturb  # noqa: E402
from .sampler import DDIMSampler, SampleResult  # noqa: E402
from .trainer import SPADTrainer  # noqa: E402

__all__ = [
    "__version__",
    "ops",
    "reference",
    "schedule",
    "metrics",
    "SPADConfig",
    "PerturbConfig",
    "spad_perturb",
    "DDIMSampler",
    "SampleResult",
    "SPADTrainer",
]
