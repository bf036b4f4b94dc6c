"""The op table and the dispatch every op shares: signatures, the device guard, grid limits, eta bounds and the
fallback of ``backend="auto"`` when a Triton kernel fails to compile or launch."""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch

from spadfast.ops import dispatch as ops
from spadfast.ops import reference
from spadfast.ops.constants import BACKENDS, PREDICTION_TYPES
from spadfast.ops.op_table import OPS


def _example(op: str, device: str = "cpu") -> tuple:
    """Positional arguments of one small call of ``op`` (random inputs, odd sizes, explicit noise)."""
    g = torch.Generator().manual_seed(len(op))
    mask = (torch.rand((2, 1, 13, 19), generator=g) < 0.5).float().to(device)
    noise = torch.randn(mask.shape, generator=g).to(device)
    if op == "canny":
        return (mask,)
    if op == "boundary_blur":
        return (mask, 1.0, 0.3, 1, noise)
    if op == "target_noise":
        anchors = (torch.rand(mask.shape, generator=g) < 0.3).to(device)
        return (mask, 0.5, 4, 0.25, noise, anchors)
    if op == "ddim_step":
        x, out = torch.randn((2, 2, 1, 13, 19), generator=g).to(device)
        return (x, out, 0.4, 0.6, 0.5, noise)
    raise AssertionError(op)


def _same(a, b) -> bool:
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_op_table_covers_the_public_ops():
    assert set(OPS) == {"canny", "boundary_blur", "target_noise", "ddim_step"}
    for name, spec in OPS.items():
        assert spec.reference is getattr(reference, name)
        assert callable(getattr(ops, name))
    assert set(BACKENDS) == {"auto", "reference", "triton"}
    import spadfast.config

    assert spadfast.config.PREDICTION_TYPES == PREDICTION_TYPES


@pytest.mark.parametrize("op", list(OPS))
def test_reference_launcher_and_ops_signatures_agree(op):
    pytest.importorskip("triton")
    spec = OPS[op]
    ref = list(inspect.signature(spec.reference).parameters.values())
    launcher = list(inspect.signature(spec.launcher).parameters.values())
    public = list(inspect.signature(getattr(ops, spec.name)).parameters.values())
    assert launcher[:-1] == ref and launcher[-1].name == "block_size"
    assert launcher[-1].kind is inspect.Parameter.KEYWORD_ONLY and launcher[-1].default is None
    assert public[:-1] == ref and public[-1].name == "backend" and public[-1].default == "auto"


# ------------------------------------------------------------------------------------------------- device guard
def test_device_context_enters_the_tensors_cuda_device(monkeypatch):
    pytest.importorskip("triton")
    from spadfast.kernels import utils

    entered = []

    class Recorder:
        def __init__(self, device):
            entered.append(torch.device(device))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", Recorder)
    for index in range(4):
        with utils.device_context(torch.device(f"cuda:{index}")):
            pass
    assert entered == [torch.device(f"cuda:{i}") for i in range(4)]
    with utils.device_context(torch.device("cpu")):
        pass
    assert len(entered) == 4  # no CUDA context for CPU tensors


@pytest.mark.parametrize("op", list(OPS))
def test_every_launch_runs_inside_the_inputs_device_context(kernel_device, monkeypatch, op):
    from spadfast.kernels import utils

    events = []
    real_context = utils.device_context

    class Guard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            events.append(("enter", self.device))
            self.inner = real_context(self.device)
            return self.inner.__enter__()

        def __exit__(self, *exc):
            events.append(("exit", self.device))
            return self.inner.__exit__(*exc)

    spec = OPS[op]
    module = __import__(f"spadfast.kernels.{spec.kernel_module}", fromlist=["x"])
    kernel_name = next(n for n in vars(module) if n.startswith("_") and n.endswith("_kernel"))
    kernel = getattr(module, kernel_name)

    class Spy:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                events.append(("launch", grid))
                return kernel[grid](*args, **kwargs)

            return run

    monkeypatch.setattr(utils, "device_context", Guard)
    monkeypatch.setattr(module, kernel_name, Spy())
    args = _example(op, kernel_device)
    got = ops.__dict__[op](*args, backend="triton")
    assert [e[0] for e in events] == ["enter", "launch", "exit"]
    assert events[0][1] == args[0].device
    assert _same(got, spec.reference(*args)) or not spec.exact


# --------------------------------------------------------------------------------------------------- grid limits
@pytest.mark.parametrize("op", list(OPS))
def test_batch_sits_on_grid_axis_0(op):
    pytest.importorskip("triton")
    B = 65536  # more than CUDA's 65,535 on grid axes 1 and 2
    # stride 0 along the batch: no memory
    args = [a[:1].expand(B, *a.shape[1:]) if isinstance(a, torch.Tensor) else a for a in _example(op)]
    kwargs = {"validate": False} if op != "ddim_step" else {}
    plan = OPS[op].planner(*args, **kwargs)
    assert plan.grid[0] == B and max(plan.grid[1:]) <= 65535


def test_grid_limits_raise_naming_the_input():
    pytest.importorskip("triton")
    from spadfast.kernels.utils import grid_3d

    assert grid_3d(2**31 - 1, 65535 * 16, 65535 * 32, 16, 32, "mask") == (2**31 - 1, 65535, 65535)
    for B, H, W in ((2**31, 1, 1), (1, 65535 * 16 + 1, 1), (1, 1, 65535 * 32 + 1)):
        with pytest.raises(ValueError, match="`mask` is too large"):
            grid_3d(B, H, W, 16, 32, "mask")
    tall = torch.zeros(1, 1, 1, 1, dtype=torch.bool).expand(1, 1, 2**24, 1)
    with pytest.raises(ValueError, match="`mask` is too large.*axis 1"):
        OPS["canny"].planner(tall, validate=False, block_size=(128, 128))


# ------------------------------------------------------------------------------------------------------ eta
BAD_ETAS = [-1.0, -0.5, -1e-12, -0.0 - 1e-300, 1.0 + 1e-12, 1.5, 2.0, 10.0, 1e300, math.inf, -math.inf, math.nan]


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_ddim_step_rejects_eta_outside_unit_interval(backend, kernel_device):
    device = "cpu" if backend == "reference" else kernel_device
    x, out = torch.randn(2, 2, 1, 5, 7, device=device)
    for eta in BAD_ETAS:
        with pytest.raises(ValueError, match="`eta` must be a number in \\[0, 1\\]"):
            ops.ddim_step(x, out, 0.4, 0.6, eta, backend=backend)
    for eta in ("0.5", None, True, [0.5]):
        with pytest.raises(TypeError, match="`eta`"):
            ops.ddim_step(x, out, 0.4, 0.6, eta, backend=backend)


def test_ddim_step_accepts_the_whole_unit_interval():
    x, out = torch.randn(2, 2, 1, 5, 7)
    noise = torch.randn_like(x)
    for eta in [0, 1, *torch.linspace(0, 1, 201).tolist(), 1e-300, 1 - 1e-16]:
        prev, _ = ops.ddim_step(x, out, 0.4, 0.6, eta, noise, backend="reference")
        assert torch.isfinite(prev).all()


# ----------------------------------------------------------------------------------------------- safe fallback
class _BrokenKernel:
    """Stands in for a JIT kernel whose compilation fails (as ptxas or an out-of-resources error would)."""

    def __init__(self):
        self.calls = 0

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.calls += 1
            raise RuntimeError("injected: ptxas failed")

        return run


@pytest.fixture
def broken(monkeypatch, kernel_device):
    """Per op: its kernel replaced by a failing one, a fresh fallback registry, and "auto" resolving to Triton on
    this device (as it does for CUDA tensors)."""
    monkeypatch.setattr(ops, "_FALLBACKS", {})
    real = ops.resolve_backend
    monkeypatch.setattr(ops, "resolve_backend", lambda b, t: "triton" if b == "auto" else real(b, t))

    def install(op):
        module = __import__(f"spadfast.kernels.{OPS[op].kernel_module}", fromlist=["x"])
        name = next(n for n in vars(module) if n.startswith("_") and n.endswith("_kernel"))
        fake = _BrokenKernel()
        monkeypatch.setattr(module, name, fake)
        return fake

    return install


@pytest.mark.parametrize("op", list(OPS))
def test_auto_warns_once_then_runs_the_reference(broken, kernel_device, op):
    fake = broken(op)
    args = _example(op, kernel_device)
    want = OPS[op].reference(*args)
    with pytest.warns(RuntimeWarning, match=f"`{op}` \\(.*BLOCK_H=.*\\) failed: RuntimeError: injected") as rec:
        got = getattr(ops, op)(*args)
    assert len(rec) == 1 and "for the rest of this process" in str(rec[0].message)
    assert _same(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _same(getattr(ops, op)(*args), want)  # no second warning, no second attempt
    assert fake.calls == 1
    assert set(ops._FALLBACKS) == {op}


@pytest.mark.parametrize("op", list(OPS))
def test_forced_triton_raises_on_kernel_failure(broken, kernel_device, op):
    from spadfast.kernels.utils import KernelLaunchError

    broken(op)
    with pytest.raises(KernelLaunchError, match=f"`{op}`.*injected") as info:
        getattr(ops, op)(*_example(op, kernel_device), backend="triton")
    assert info.value.op == op and "BLOCK_W=" in info.value.variant
    assert not ops._FALLBACKS


def test_bad_input_is_not_a_kernel_failure(broken, kernel_device):
    broken("canny")
    with pytest.raises(ValueError, match="`mask` must be binary"):
        ops.canny(torch.full((5, 5), 0.5, device=kernel_device))
    assert not ops._FALLBACKS


# ------------------------------------------------------------------------------------------------ one tile rule
@pytest.mark.parametrize("op", list(OPS))
def test_one_block_size_keyword_for_every_launcher(op):
    pytest.importorskip("triton")
    args = _example(op)
    for bad in [(16,), (16, 24), (0, 32), (16.0, 32), "16x32", (True, 32)]:
        with pytest.raises(ValueError, match="`block_size` must be"):
            OPS[op].planner(*args, block_size=bad)
    plan = OPS[op].planner(*args, block_size=(4, 8))
    assert (plan.constexprs["BLOCK_H"], plan.constexprs["BLOCK_W"]) == (4, 8) and plan.num_warps >= 1


def test_tile_rule():
    pytest.importorskip("triton")
    from spadfast.kernels.utils import INTERPRETER_TILE, tile_config

    gpu, cpu = torch.device("meta"), torch.device("cpu")
    for H in (1, 2, 3, 31, 256, 1000):
        for W in (1, 5, 47, 256, 4097):
            for tile, ept in (((16, 32), 4), ((16, 32), 1), ((4, 32), 1), ((16, 64), 4), ((8, 128), 4)):
                bh, bw, warps = tile_config(H, W, gpu, tile, ept)
                assert bw == min(1 << (W - 1).bit_length(), tile[1])
                assert bh <= max(tile[0], tile[0] * tile[1] // bw) and bh <= max(1, 1 << (H - 1).bit_length())
                assert warps == max(1, min(16, bh * bw // (32 * ept)))
                assert tile_config(H, W, cpu, tile, ept)[1] == min(1 << (W - 1).bit_length(), INTERPRETER_TILE[1])


# ------------------------------------------------------------------------------------------- non-finite operands
NON_FINITE = [math.nan, math.inf, -math.inf]
FLOAT_OPERANDS = {
    "boundary_blur": ("sigma", "strength", "truncate", "noise", "base"),
    "target_noise": ("strength", "keep_ratio", "noise"),
}


def _perturb_kwargs(op: str, device: str, dtype: torch.dtype) -> dict:
    """One small call of a perturbation op with every float operand given explicitly."""
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand((2, 1, 9, 11), generator=g) < 0.5).float().to(device)
    noise = torch.randn(mask.shape, generator=g).to(device=device, dtype=dtype)
    if op == "boundary_blur":
        base = torch.rand(mask.shape, generator=g).to(device=device, dtype=dtype)
        return dict(mask=mask, sigma=1.0, strength=0.3, radius=1, noise=noise, base=base, truncate=3.0)
    return dict(mask=mask, strength=0.5, anchor_size=4, keep_ratio=0.25, noise=noise)


def _with_value(kwargs: dict, name: str, value: float) -> dict:
    """``kwargs`` with ``name`` set to ``value`` (a number) or holding ``value`` at one pixel (a tensor)."""
    changed = dict(kwargs)
    if isinstance(kwargs[name], torch.Tensor):
        t = kwargs[name].clone()
        t[1, 0, 4, 5] = value
        changed[name] = t
    else:
        changed[name] = value
    return changed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("op", ["boundary_blur", "target_noise"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_non_finite_float_operands_are_refused(backend, op, dtype, kernel_device):
    device = "cpu" if backend == "reference" else kernel_device
    fn = getattr(ops, op)
    kwargs = _perturb_kwargs(op, device, dtype)
    assert torch.isfinite(fn(**kwargs, backend=backend)).all()
    for name in FLOAT_OPERANDS[op]:
        for value in NON_FINITE:
            with pytest.raises(ValueError, match=f"`{name}` must be (a )?finite"):
                fn(**_with_value(kwargs, name, value), backend=backend)


@pytest.mark.parametrize("op", ["boundary_blur", "target_noise"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_validate_false_skips_the_tensor_value_check(backend, op, kernel_device):
    """The finiteness of tensor operands is a host sync: ``validate=False`` skips it (hot loops); numbers are always
    checked."""
    device = "cpu" if backend == "reference" else kernel_device
    fn = getattr(ops, op)
    kwargs = _perturb_kwargs(op, device, torch.float32)
    fn(**_with_value(kwargs, "noise", math.nan), validate=False, backend=backend)
    with pytest.raises(ValueError, match="`strength` must be a finite"):
        fn(**_with_value(kwargs, "strength", math.nan), validate=False, backend=backend)
