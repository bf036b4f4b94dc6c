"""Triton kernels of spadfast, installed as ``spadfast.kernels`` (one op per module)."""
