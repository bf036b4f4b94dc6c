"""Triton kernels of spadfast, installed as ``spadfast.kernels``: one op per module (``canny``, ``boundary_blur``,
``target_noise``, ``ddim``), ``utils`` (the tile rule, grid, pointer views, clamped indexing, device guard and launch
shared by every launcher) and ``aot`` (the ahead-of-time compile check behind ``spadfast verify --compile-only``)."""
