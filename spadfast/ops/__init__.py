"""Public ops with backend dispatch (``backend="auto" | "reference" | "triton"``); the pure-PyTorch reference, the op
table and the argument checks live beside them."""

from .dispatch import boundary_blur, canny, ddim_step, resolve_backend, target_noise, triton_available

__all__ = ["canny", "boundary_blur", "target_noise", "ddim_step", "triton_available", "resolve_backend"]
