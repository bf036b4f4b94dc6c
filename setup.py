"""Install spadfast: the metadata lives in pyproject.toml (PEP 621); this shim keeps `python setup.py ...` and old
pip versions working. The Triton kernels in ./kernels install as ``spadfast.kernels`` (pyproject's package-dir)."""

from setuptools import setup

setup()
