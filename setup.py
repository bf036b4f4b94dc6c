"""Install spadfast; the Triton kernels in ./kernels install as ``spadfast.kernels``."""

import re
from pathlib import Path

from setuptools import setup

_here = Path(__file__).parent
_version = re.search(r'__version__ = "([^"]+)"', (_here / "spadfast" / "_version.py").read_text()).group(1)

setup(
    name="spadfast",
    version=_version,
    description="Fast SPAD (structure- and progress-aware diffusion) for medical image segmentation",
    long_description=(_here / "README.md").read_text() if (_here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["spadfast", "spadfast.kernels"],
    package_dir={"spadfast": "spadfast", "spadfast.kernels": "kernels"},
    # torch is deliberately a floor, not a pin: the bootstrap script pins the CPU wheel before installing us,
    # and GPU users keep their CUDA build.
    install_requires=[
        "torch>=2.4",
        "numpy<2.4",
        "opencv-python-headless",
        "safetensors",
        "pyyaml",
        "tqdm",
        "scipy",
        "nibabel>=5.2",
        "matplotlib",
    ],
    extras_require={
        "triton": ["triton"],
        "nvtx": ["nvtx"],
        "tensorboard": ["tensorboard"],
        "test": ["pytest", "pytest-benchmark", "diffusers", "monai"],
    },
    entry_points={"console_scripts": ["spadfast=spadfast.cli:main"]},
)
