import math

import pytest
import torch

from spadfast import DDIMSampler
from spadfast.diffusion.schedule import alphas_cumprod, make_betas


class ToyDenoiser(torch.nn.Module):
    """A fixed, deterministic stand-in for the UNet: smooth in x, depends on the image and on t."""

    def __init__(self, in_channels: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(1, in_channels, 3, 3, generator=g) * 0.2)

    def forward(self, x, t):
        out = torch.nn.functional.conv2d(x, self.weight, padding=1)
        return torch.tanh(out) * (0.5 + t.view(-1, 1, 1, 1) / 2000)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loop_matches_diffusers(spacing, prediction_type):
    steps, T = 20, 1000  # 20 divides 1000, so diffusers' "t - T//S" previous step is right for both spacings
    model = ToyDenoiser(2)
    sampler = DDIMSampler(model, alphas_cumprod(make_betas("linear", T)), prediction_type=prediction_type,
                          steps=steps, spacing=spacing, clip_sample=1.0)
    images = torch.rand(2, 1, 12, 10) * 2 - 1
    result = sampler.sample(images, ensemble=2, seed=3, return_members=True)

    DDIMScheduler = pytest.importorskip("diffusers").DDIMScheduler  # absent on some GPU machines
    sched = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=True,
                          timestep_spacing=spacing, prediction_type=prediction_type, set_alpha_to_one=True)
    sched.set_timesteps(steps)
    x = torch.randn((4, 1, 12, 10), generator=torch.Generator().manual_seed(3))
    imgs = images.repeat_interleave(2, dim=0)
    with torch.no_grad():
        for t in sched.timesteps:
            out = model(torch.cat([x, imgs], 1), torch.full((4,), float(t)))
            x = sched.step(out, t, x, eta=0.0).prev_sample
    expected = ((x.clamp(-1, 1) + 1) / 2).view(2, 2, 12, 10)
    torch.testing.assert_close(result.members, expected, rtol=1e-5, atol=1e-5)


def test_chunking_and_seed():
    model = ToyDenoiser(3)
    ac = alphas_cumprod(make_betas("linear", 1000))
    images = torch.rand(3, 1, 9, 11) * 2 - 1
    whole = DDIMSampler(model, ac, perturb_mode="condition", steps=4, chunk=64).sample(images, ensemble=3, seed=1)
    parts = DDIMSampler(model, ac, perturb_mode="condition", steps=4, chunk=2).sample(images, ensemble=3, seed=1)
    torch.testing.assert_close(whole.probs, parts.probs, rtol=0, atol=1e-6)
    other = DDIMSampler(model, ac, perturb_mode="condition", steps=4).sample(images, ensemble=3, seed=2)
    assert not torch.equal(whole.probs, other.probs)
    assert (whole.std > 0).any()


def test_eta_sampling_is_deterministic_per_seed():
    model = ToyDenoiser(2)
    sampler = DDIMSampler(model, alphas_cumprod(make_betas("linear", 1000)), steps=5, eta=1.0)
    images = torch.rand(1, 1, 8, 8)
    a = sampler.sample(images, ensemble=2, seed=0).probs
    assert torch.equal(a, sampler.sample(images, ensemble=2, seed=0).probs)
    assert not torch.equal(a, sampler.sample(images, ensemble=2, seed=1).probs)


def test_bad_arguments():
    sampler = DDIMSampler(ToyDenoiser(2), alphas_cumprod(make_betas("linear", 100)), steps=5)
    with pytest.raises(ValueError, match="`steps`"):
        sampler.sample(torch.zeros(1, 1, 8, 8), steps=101)
    with pytest.raises(ValueError, match="`images`"):
        sampler.sample(torch.zeros(1, 8, 8))
    with pytest.raises(TypeError, match="`images`"):
        sampler.sample(torch.zeros(1, 1, 8, 8, dtype=torch.int64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("fusion", ["none", "mean", "uncertainty"])
def test_cuda_graph_matches_eager(fusion):
    model = ToyDenoiser(2).cuda()
    ac = alphas_cumprod(make_betas("linear", 1000))
    images = torch.rand(2, 1, 32, 32, device="cuda")
    eager = DDIMSampler(model, ac, steps=10, cuda_graph=False, step_fusion=fusion).sample(images, ensemble=3, seed=4)
    graph = DDIMSampler(model, ac, steps=10, cuda_graph=True, step_fusion=fusion)
    first = graph.sample(images, ensemble=3, seed=4)
    second = graph.sample(images, ensemble=3, seed=4)  # replay
    torch.testing.assert_close(first.probs, eager.probs, rtol=1e-5, atol=1e-5)
    assert torch.equal(first.probs, second.probs)
    assert len(graph._graphs) == 1



# ------------------------------------------------------------------------------------- graph path, on the CPU
class FakeGraphs:
    """Stands in for CUDA graphs on the CPU: ``capture`` runs the loop once on the static buffers (as a capture
    records it) and ``replay`` re-runs it on whatever the static buffers hold, writing into the same output."""

    def __init__(self, fail: bool = False):
        self.captures = 0
        self.fail = fail

    def supports(self, x):
        return True

    def capture(self, fn, static_inputs):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures += 1
        static_out = fn(*static_inputs)

        def replay():
            static_out.copy_(fn(*static_inputs))

        return replay, static_out


def _graph_sampler(**kw):
    model = kw.pop("model", None) or ToyDenoiser(3 if kw.get("perturb_mode") == "condition" else 2)
    sampler = DDIMSampler(model, alphas_cumprod(make_betas("linear", 1000)), steps=kw.pop("steps", 3), **kw)
    sampler._graph_backend = FakeGraphs()
    return sampler


SETTINGS = [
    ("backend", "reference", "auto"), ("clip_sample", 1.0, None), ("prediction_type", "epsilon", "sample"),
    ("prediction_type", "epsilon", "v_prediction"), ("spacing", "trailing", "leading"),
    ("spacing", "trailing", "linspace"), ("amp_dtype", None, torch.bfloat16), ("channels_last", False, True),
]


@pytest.mark.parametrize("name,before,after", SETTINGS)
def test_graph_cache_never_replays_a_stale_setting(name, before, after):
    """Changing any setting after a capture gives what a fresh eager sampler with that setting gives."""
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    sampler = _graph_sampler(**{name: before})
    sampler.sample(images, ensemble=2, seed=1)
    setattr(sampler, name, after)
    got = sampler.sample(images, ensemble=2, seed=1)
    eager = _graph_sampler(**{name: after}, model=sampler.model)
    eager.cuda_graph = False
    want = eager.sample(images, ensemble=2, seed=1)
    torch.testing.assert_close(got.probs, want.probs, rtol=0, atol=1e-6)
    assert sampler._graph_backend.captures == 2


def test_graph_cache_tracks_model_identity_and_perturb_mode():
    images = torch.rand(1, 1, 8, 8) * 2 - 1
    sampler = _graph_sampler()
    first = sampler.sample(images, seed=0).probs
    sampler.model = ToyDenoiser(2)  # another model (e.g. a reloaded EMA): a new capture, not the old graph
    with torch.no_grad():
        sampler.model.weight.mul_(-1.5)
    second = sampler.sample(images, seed=0).probs
    assert sampler._graph_backend.captures == 2 and not torch.equal(first, second)
    sampler.model, sampler.perturb_mode = ToyDenoiser(3), "condition"
    sampler.sample(images, seed=0)
    assert sampler._graph_backend.captures == 3


def test_graph_replay_equals_eager_and_cache_is_bounded():
    sampler = _graph_sampler(graph_cache_size=2)
    eager = _graph_sampler(model=sampler.model)
    eager.cuda_graph = False
    for size in (8, 9, 8, 10, 8):  # 10 evicts 9, the least recently used (8 was used again after 9)
        images = torch.rand(2, 1, size, size) * 2 - 1
        for seed in (0, 1):  # a replay with new inputs in the static buffers
            got = sampler.sample(images, ensemble=2, seed=seed)
            torch.testing.assert_close(got.probs, eager.sample(images, ensemble=2, seed=seed).probs,
                                       rtol=0, atol=1e-6)
        assert len(sampler._graphs) <= 2
    assert sampler._graph_backend.captures == 3  # 8, 9, 10: the later 8s are replays (FIFO would recapture)


def test_failed_capture_warns_once_and_samples_eagerly():
    sampler = _graph_sampler()
    sampler._graph_backend = FakeGraphs(fail=True)
    eager = _graph_sampler(model=sampler.model)
    eager.cuda_graph = False
    images = torch.rand(1, 1, 8, 8) * 2 - 1
    with pytest.warns(RuntimeWarning, match="sampling eagerly"):
        got = sampler.sample(images, seed=0)
    torch.testing.assert_close(got.probs, eager.sample(images, seed=0).probs, rtol=0, atol=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler.sample(images, seed=0)  # no second warning


def test_cuda_graph_capture_and_replay_run_on_the_tensors_device(monkeypatch):
    """The capture's streams, the capture itself and every replay enter the device of the inputs (cuda:1 here),
    never the current device. CUDA is mocked: this checks the bookkeeping of the CUDA-only branch on any machine."""
    from spadfast.diffusion import sampler as sampler_mod

    entered, log = [], []

    class FakeDevice:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(str(self.device))

        def __exit__(self, *exc):
            return False

    class FakeStream:
        def __init__(self, device=None):
            log.append(("stream", str(device)))

        def wait_stream(self, other):
            pass

    class FakeGraph:
        def replay(self):
            log.append(("replay", entered[-1]))

    cuda = sampler_mod.torch.cuda
    monkeypatch.setattr(cuda, "device", FakeDevice)
    monkeypatch.setattr(cuda, "Stream", FakeStream)
    monkeypatch.setattr(cuda, "current_stream", lambda device=None: FakeStream(device))
    monkeypatch.setattr(cuda, "stream", lambda s: FakeDevice("stream"))
    monkeypatch.setattr(cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(cuda, "graph", lambda g: FakeDevice("graph"))

    x = torch.zeros(2, 1, 4, 4)
    calls = []
    graphs = sampler_mod._CudaGraphs()
    fake_device = torch.device("cuda", 1)

    def fn(a):
        calls.append(a)
        return a + 1

    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: fake_device), raising=False)
    replay, out = graphs.capture(fn, (x,))
    replay()
    monkeypatch.undo()
    assert entered[0] == "cuda:1" and ("stream", "cuda:1") in log
    assert ("replay", "cuda:1") in log
    assert len(calls) == 3  # two warm-up runs and the captured one


@pytest.mark.parametrize("eta", [-0.5, 1.0 + 1e-6, 1.5, 2.0, float("nan"), float("inf")])
def test_eta_outside_unit_interval_is_rejected(eta):
    with pytest.raises(ValueError, match="`eta`"):
        DDIMSampler(ToyDenoiser(2), alphas_cumprod(make_betas("linear", 100)), eta=eta)


def test_every_eta_in_unit_interval_samples_finite():
    images = torch.rand(1, 1, 6, 6) * 2 - 1
    for eta in torch.linspace(0, 1, 21).tolist():
        sampler = DDIMSampler(ToyDenoiser(2), alphas_cumprod(make_betas("linear", 1000)), steps=7, eta=eta)
        assert torch.isfinite(sampler.sample(images, ensemble=2, seed=0).probs).all(), eta


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_every_step_count_ends_on_the_clean_sample(spacing):
    """For every S in [1, T] the loop's last step targets alpha_prev = 1 (t = -1, the clean sample), never the
    noisiest alpha (what indexing alphas_cumprod at t = -1 would give), and its alphas increase monotonically."""
    T = 1000
    sampler = DDIMSampler(ToyDenoiser(2), alphas_cumprod(make_betas("linear", T)), spacing=spacing)
    for S in range(1, T + 1):
        _, a_t, a_prev = sampler.set_timesteps(S, "cpu")
        assert a_t.shape == (S,) and a_prev[-1] == 1.0, (spacing, S)
        assert (a_prev[:-1] > a_t[:-1]).all() and (a_t[1:] > a_t[:-1]).all(), (spacing, S)


def test_noise_keys_make_an_image_independent_of_its_batch():
    """With per-image noise keys an image gets the same members whether alone, first or last in a batch."""
    sampler = DDIMSampler(ToyDenoiser(2), alphas_cumprod(make_betas("linear", 1000)), steps=3, chunk=3)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    keys = [11, 7, 2024, 3]
    whole = sampler.sample(images, ensemble=2, seed=5, noise_keys=keys, return_members=True).members
    for order in ([3, 2, 1, 0], [1, 3], [2]):
        part = sampler.sample(images[order], ensemble=2, seed=5, noise_keys=[keys[i] for i in order],
                              return_members=True).members
        torch.testing.assert_close(part, whole[order], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="`noise_keys`"):
        sampler.sample(images, noise_keys=[1, 2])


class NestingDenoiser(torch.nn.Module):
    """A denoiser whose first forward runs ``sampler.sample(images, **kwargs)`` from inside the sampling loop (as a
    validation pass inside a prediction callback would); the nested result is kept in ``nested``."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.sampler: DDIMSampler | None = None
        self.nest_with: tuple | None = None
        self.nested = None

    def forward(self, x, t):
        if self.nest_with is not None:
            images, kwargs = self.nest_with
            self.nest_with = None
            self.nested = self.sampler.sample(images, **kwargs)
        return self.inner(x, t)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("chunk", [64, 3])
def test_reentrant_sample_inside_the_model_equals_separate_calls(backend, chunk):
    model = NestingDenoiser(ToyDenoiser(2))
    sampler = DDIMSampler(model, alphas_cumprod(make_betas("linear", 1000)), steps=4, eta=0.7, chunk=chunk,
                          backend=backend)
    model.sampler = sampler
    outer_images, inner_images = torch.rand(2, 1, 8, 8) * 2 - 1, torch.rand(3, 1, 8, 8) * 2 - 1
    outer_kwargs, inner_kwargs = dict(ensemble=2, seed=5), dict(ensemble=3, seed=11, return_members=True)
    outer_alone = sampler.sample(outer_images, **outer_kwargs)
    inner_alone = sampler.sample(inner_images, **inner_kwargs)

    model.nest_with = (inner_images, inner_kwargs)
    outer_nested = sampler.sample(outer_images, **outer_kwargs)
    assert model.nested is not None  # the nested call did run inside the outer loop
    assert torch.equal(outer_nested.probs, outer_alone.probs)
    assert torch.equal(model.nested.members, inner_alone.members)
    assert model.training  # the outer call's train/eval restore is not undone by the nested one


# ------------------------------------------------------------------------------------- step fusion
class ConstantX0(torch.nn.Module):
    """``prediction_type="sample"`` stand-in: predicts ``early`` at timesteps above 700 and ``late`` below,
    whatever x_t (each ``[1,1,H,W]``, broadcast over rows)."""

    def __init__(self, early: torch.Tensor, late: torch.Tensor):
        super().__init__()
        self.early, self.late = early, late
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return torch.where(t.view(-1, 1, 1, 1) > 700, self.early, self.late).expand(x.shape[0], 1, *x.shape[2:])


def _fusion_sampler(**kw):
    model = kw.pop("model", None) or ToyDenoiser(2)
    return DDIMSampler(model, alphas_cumprod(make_betas("linear", 1000)), steps=kw.pop("steps", 4), **kw)


def test_step_fusion_none_is_the_default_and_bit_identical():
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    default = _fusion_sampler().sample(images, ensemble=3, seed=2, return_members=True)
    for s, kw in ((_fusion_sampler(step_fusion="none"), {}), (_fusion_sampler(step_fusion="mean"),
                                                                {"step_fusion": "none"})):
        other = s.sample(images, ensemble=3, seed=2, return_members=True, **kw)
        assert torch.equal(other.members, default.members) and torch.equal(other.std, default.std)
    for fusion in ("mean", "uncertainty"):  # fusing 4 steps is not the last step
        fused = _fusion_sampler().sample(images, ensemble=3, seed=2, step_fusion=fusion)
        assert not torch.allclose(fused.probs, default.probs, atol=1e-3), fusion


@pytest.mark.parametrize("fusion", ["mean", "uncertainty"])
def test_step_fusion_shapes_range_and_determinism(fusion):
    images = torch.rand(3, 1, 9, 11) * 2 - 1
    s = _fusion_sampler(step_fusion=fusion)
    a = s.sample(images, ensemble=2, seed=1, return_members=True)
    assert a.probs.shape == a.std.shape == (3, 1, 9, 11) and a.members.shape == (3, 2, 9, 11)
    assert a.probs.dtype == torch.float32 and (a.probs >= 0).all() and (a.probs <= 1).all()
    assert torch.equal(a.members, s.sample(images, ensemble=2, seed=1, return_members=True).members)
    assert not torch.equal(a.members, s.sample(images, ensemble=2, seed=9, return_members=True).members)
    two_class = ToyDenoiser(3)
    two_class.weight = torch.nn.Parameter(torch.cat([two_class.weight, -two_class.weight.flip(1)]))  # 2 outputs
    multi = _fusion_sampler(model=two_class, mask_channels=2, step_fusion=fusion)
    m = multi.sample(images, ensemble=2, seed=1, return_members=True)
    assert m.probs.shape == (3, 2, 9, 11) and m.members.shape == (3, 2, 2, 9, 11) and m.labels.shape == (3, 9, 11)


@pytest.mark.parametrize("fusion", ["mean", "uncertainty"])
def test_fusion_of_identical_estimates_is_the_estimate(fusion):
    x0 = torch.linspace(-1, 1, 64).view(1, 1, 8, 8)
    s = _fusion_sampler(model=ConstantX0(x0, x0), prediction_type="sample", steps=5, step_fusion=fusion)
    out = s.sample(torch.zeros(2, 1, 8, 8), ensemble=3, seed=0)
    torch.testing.assert_close(out.probs, ((x0 + 1) / 2).expand(2, 1, 8, 8), rtol=0, atol=1e-6)
    assert (out.std == 0).all()


def _bits(p):
    return -sum(q * math.log2(q) for q in (p, 1 - p) if q > 0)


def test_uncertainty_fusion_matches_a_hand_computed_two_step_case():
    """S = 2 (timesteps 999, 499): step 1 predicts a, step 2 predicts b; weights exp(sigmoid(i/2) * (1 - H(p)))."""
    a_vals, b_vals = [0.6, -1.0, 0.0, 1.0], [-0.2, 0.5, 0.0, 1.0]
    a = torch.tensor(a_vals).view(1, 1, 2, 2)
    b = torch.tensor(b_vals).view(1, 1, 2, 2)
    model = ConstantX0(a, b)
    for fusion in ("mean", "uncertainty"):
        s = _fusion_sampler(model=model, prediction_type="sample", steps=2, step_fusion=fusion)
        got = s.sample(torch.zeros(1, 1, 2, 2), ensemble=2, seed=0).probs.flatten().tolist()
        for g, av, bv in zip(got, a_vals, b_vals):
            if fusion == "mean":
                want = ((av + bv) / 2 + 1) / 2
            else:
                w1 = math.exp((1 / (1 + math.exp(-0.5))) * (1 - _bits((av + 1) / 2)))
                w2 = math.exp((1 / (1 + math.exp(-1.0))) * (1 - _bits((bv + 1) / 2)))
                want = ((w1 * av + w2 * bv) / (w1 + w2) + 1) / 2
            assert g == pytest.approx(want, abs=1e-6), (fusion, av, bv)
    # hand numbers for pixel 0: p = 0.8 (H = 0.7219 bits) then 0.4 (H = 0.9710 bits)
    w1, w2 = math.exp(0.62246 * 0.27807), math.exp(0.73106 * 0.02905)
    assert got[0] == pytest.approx(((w1 * 0.6 - w2 * 0.2) / (w1 + w2) + 1) / 2, abs=1e-4)


@pytest.mark.parametrize("fusion", ["none", "mean", "uncertainty"])
def test_every_step_count_from_1_to_50_samples_finite(fusion):
    s = _fusion_sampler(step_fusion=fusion)
    images = torch.rand(1, 1, 8, 8) * 2 - 1
    for steps in range(1, 51):
        out = s.sample(images, steps=steps, ensemble=2, seed=0)
        assert torch.isfinite(out.probs).all() and out.probs.shape == (1, 1, 8, 8), steps


@pytest.mark.parametrize("fusion", ["mean", "uncertainty"])
def test_step_fusion_does_not_depend_on_chunking_or_batch(fusion):
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    keys = [4, 8, 15]
    whole = _fusion_sampler(step_fusion=fusion, chunk=64).sample(images, ensemble=3, seed=1, noise_keys=keys,
                                                                  return_members=True)
    for chunk in (1, 2, 4, 7):
        part = _fusion_sampler(step_fusion=fusion, chunk=chunk).sample(images, ensemble=3, seed=1, noise_keys=keys,
                                                                        return_members=True)
        torch.testing.assert_close(part.members, whole.members, rtol=0, atol=1e-6)
    alone = _fusion_sampler(step_fusion=fusion).sample(images[2:], ensemble=3, seed=1, noise_keys=keys[2:],
                                                       return_members=True)
    torch.testing.assert_close(alone.members, whole.members[2:], rtol=0, atol=1e-6)


def test_mean_fusion_members_do_not_depend_on_the_ensemble_size():
    """Keyed noise: member k is the same draw whatever K; "mean" fuses each member on its own."""
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    s = _fusion_sampler(step_fusion="mean")
    big = s.sample(images, ensemble=4, seed=3, noise_keys=[1, 2], return_members=True).members
    for k in (1, 2, 3):
        small = s.sample(images, ensemble=k, seed=3, noise_keys=[1, 2], return_members=True).members
        torch.testing.assert_close(small, big[:, :k], rtol=0, atol=1e-6)
    # "uncertainty" weights read every member: one member alone weighs by its own confidence, and still equals the
    # first member of a K = 1 draw inside a larger batch
    u = _fusion_sampler(step_fusion="uncertainty")
    one = u.sample(images, ensemble=1, seed=3, noise_keys=[1, 2], return_members=True).members
    assert not torch.allclose(one, u.sample(images, ensemble=4, seed=3, noise_keys=[1, 2],
                                            return_members=True).members[:, :1], atol=1e-6)


def test_keyed_noise_of_k_members_is_the_first_k_of_a_larger_draw_at_every_size():
    """torch's CPU randn redraws the tail of a length that is not a multiple of 16: keyed rows are padded, so the
    prefix property holds at odd sizes too (and sizes that are multiples of 16 draw what they always drew)."""
    s = _fusion_sampler()
    for channels in (1, 2, 3):
        s.mask_channels = channels
        for h in range(1, 21):
            for w in (1, 2, 5, 7, 8, 13, 16, 33):
                big = s._initial_noise(2, 5, (h, w), 7, [11, 0]).view(2, 5, channels, h, w)
                for k in (1, 2, 4):
                    small = s._initial_noise(2, k, (h, w), 7, [11, 0]).view(2, k, channels, h, w)
                    assert torch.equal(small, big[:, :k]), (channels, h, w, k)
    s.mask_channels = 1
    gen = torch.Generator().manual_seed((7 * 1_000_003 + 11) % 2**63)
    assert torch.equal(s._initial_noise(1, 3, (32, 32), 7, [11]), torch.randn((3, 1, 32, 32), generator=gen))


@pytest.mark.parametrize("fusion", ["mean", "uncertainty"])
def test_step_fusion_graph_replay_equals_eager_and_keys_the_cache(fusion):
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    eager = _fusion_sampler(step_fusion=fusion, steps=3).sample(images, ensemble=2, seed=4)
    graph = _graph_sampler(step_fusion=fusion)
    first, second = graph.sample(images, ensemble=2, seed=4), graph.sample(images, ensemble=2, seed=4)
    torch.testing.assert_close(first.probs, eager.probs, rtol=0, atol=1e-6)
    assert torch.equal(first.probs, second.probs) and graph._graph_backend.captures == 1
    plain = graph.sample(images, ensemble=2, seed=4, step_fusion="none")  # a new graph, not a stale replay
    assert graph._graph_backend.captures == 2
    assert torch.equal(plain.probs, _fusion_sampler(steps=3).sample(images, ensemble=2, seed=4).probs)


def _grid_matches_separate_calls(s, images, ensemble, subsets, keys, steps, **sample_kw):
    grid = s.sample_fusion_grid(images, steps=steps, ensemble=ensemble, subsets=subsets, seed=5, noise_keys=keys)
    assert sorted(grid) == sorted((f, e) for f in ("none", "mean", "uncertainty") for e in subsets)
    for (fusion, e), members in grid.items():
        alone = s.sample(images, steps=steps, ensemble=e, seed=5, noise_keys=keys, step_fusion=fusion,
                         return_members=True, **sample_kw).members
        alone = alone if alone.dim() == members.dim() else alone.unsqueeze(2)  # binary members come as [B,K,H,W]
        assert members.dtype == torch.float32 and members.shape == alone.shape, (fusion, e)
        # other batch compositions round the convolutions differently: equal up to float32 noise
        torch.testing.assert_close(members, alone, rtol=0, atol=1e-5, msg=lambda m: f"{fusion} x{e}: {m}")


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_fusion_grid_equals_separate_calls_at_every_step_count_and_chunk(chunk):
    images = torch.rand(3, 1, 9, 7) * 2 - 1
    s = _fusion_sampler(chunk=chunk)
    for steps in range(1, 9):
        _grid_matches_separate_calls(s, images, 5, (1, 2, 5), [3, 1, 4], steps)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_fusion_grid_equals_separate_calls_for_each_target_and_conditioning(prediction_type):
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    _grid_matches_separate_calls(_fusion_sampler(prediction_type=prediction_type), images, 4, (4, 1, 3), [2, 6], 4)
    cond = _fusion_sampler(model=ToyDenoiser(3), self_condition=True, prediction_type=prediction_type)
    _grid_matches_separate_calls(cond, images, 3, (2,), [7, 7], 3)
    two_class = ToyDenoiser(3)
    two_class.weight = torch.nn.Parameter(torch.cat([two_class.weight, -two_class.weight.flip(1)]))
    multi = _fusion_sampler(model=two_class, mask_channels=2, prediction_type=prediction_type)
    _grid_matches_separate_calls(multi, images, 3, (1, 3), [0, 9], 5)


def test_fusion_grid_graph_replay_equals_eager_and_keys_the_cache_by_subsets():
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    keys = [1, 2]
    eager = _fusion_sampler(steps=3).sample_fusion_grid(images, ensemble=3, subsets=(1, 3), seed=4, noise_keys=keys)
    graph = _graph_sampler()
    first = graph.sample_fusion_grid(images, ensemble=3, subsets=(1, 3), seed=4, noise_keys=keys)
    second = graph.sample_fusion_grid(images, ensemble=3, subsets=(1, 3), seed=4, noise_keys=keys)
    for key in eager:
        torch.testing.assert_close(first[key], eager[key], rtol=0, atol=1e-6)
        assert torch.equal(first[key], second[key])
    assert graph._graph_backend.captures == 1
    graph.sample_fusion_grid(images, ensemble=3, subsets=(2, 3), seed=4, noise_keys=keys)  # other subsets: another graph
    assert graph._graph_backend.captures == 2


def test_fusion_grid_refuses_what_it_cannot_share():
    images = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="`noise_keys`"):
        _fusion_sampler().sample_fusion_grid(images, ensemble=3)
    with pytest.raises(ValueError, match="`noise_keys`"):
        _fusion_sampler().sample_fusion_grid(images, ensemble=3, noise_keys=[1, 2])
    with pytest.raises(ValueError, match="`subsets`"):
        _fusion_sampler().sample_fusion_grid(images, noise_keys=[0], ensemble=3, subsets=(4,))
    with pytest.raises(ValueError, match="`subsets`"):
        _fusion_sampler().sample_fusion_grid(images, noise_keys=[0], ensemble=3, subsets=(2, 2))
    with pytest.raises(ValueError, match="`subsets`"):
        _fusion_sampler().sample_fusion_grid(images, noise_keys=[0], ensemble=3, subsets=())
    with pytest.raises(ValueError, match="eta == 0"):
        _fusion_sampler(eta=0.5).sample_fusion_grid(images, noise_keys=[0], ensemble=2)
    with pytest.raises(ValueError, match="supervised"):
        _fusion_sampler(objective="supervised").sample_fusion_grid(images, noise_keys=[0], ensemble=2)
    with pytest.raises(ValueError, match="`images`"):
        _fusion_sampler().sample_fusion_grid(torch.zeros(1, 8, 8), ensemble=2, noise_keys=[0])
    grid = _fusion_sampler().sample_fusion_grid(images, noise_keys=[0], ensemble=2)  # default: the whole ensemble
    assert sorted(grid) == [("mean", 2), ("none", 2), ("uncertainty", 2)]


def test_bad_step_fusion_is_refused_naming_the_argument():
    with pytest.raises(ValueError, match="`step_fusion`"):
        _fusion_sampler(step_fusion="max")
    with pytest.raises(ValueError, match="`step_fusion`"):
        _fusion_sampler().sample(torch.zeros(1, 1, 8, 8), step_fusion="last")
    with pytest.raises(ValueError, match="`step_fusion`"):
        _fusion_sampler(step_fusion=None)
