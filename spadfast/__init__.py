"""spadfast: fast Structure- and Progress-Aware Diffusion (SPAD) for medical image segmentation."""

import sys as _sys

from ._version import __version__


def _register_source_kernels() -> None:
    """Make ``spadfast.kernels`` importable from a source checkout that was never pip-installed.

    setup.py installs the top-level ``kernels/`` folder as ``spadfast.kernels`` (``package_dir``); without an install
    that mapping does not exist, so point the subpackage at the folder here.
    """
    import importlib.util
    import sys
    from pathlib import Path

    if importlib.util.find_spec(__name__ + ".kernels") is not None:
        return
    init = Path(__file__).resolve().parent.parent / "kernels" / "__init__.py"
    if not init.is_file():
        return
    spec = importlib.util.spec_from_file_location(
        __name__ + ".kernels", init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    sys.modules[__name__].kernels = module


_register_source_kernels()

from . import ops  # noqa: E402
from .config import PerturbConfig, SPADConfig  # noqa: E402
from .diffusion import schedule  # noqa: E402
from .diffusion.perturb import spad_perturb  # noqa: E402
from .diffusion.sampler import DDIMSampler, SampleResult  # noqa: E402
from .evaluation import metrics  # noqa: E402
from .infer.segmenter import Segmenter  # noqa: E402
from .ops import reference  # noqa: E402
from .train.trainer import SPADTrainer  # noqa: E402

# DESIGN.md's public paths `spadfast.metrics.dice` and `spadfast.schedule.make_betas` keep importing
# (`from spadfast.metrics import dice`): the same module objects as their homes in evaluation/ and diffusion/.
_sys.modules[__name__ + ".metrics"] = metrics
_sys.modules[__name__ + ".schedule"] = schedule

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
    "Segmenter",
]
