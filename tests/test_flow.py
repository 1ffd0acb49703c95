"""The generative bridge's machinery on synthetic data: a DiT trained with rectified flow recovers a known
conditional Gaussian, so a failure on GSM8K is the method's and not the code's (seed 002, phases 12-14)."""

import pytest
import torch

from harness.kinds.bridge.flow import CONDITIONS, EMA, DiTDenoiser, euler_sample, rectified_flow_loss

LATENTS, WIDTH, SOURCE_LEN, SOURCE_WIDTH, SIGMA = 2, 4, 3, 4, 0.3


def _task(generator: torch.Generator):
    """Source [n, S, C]; target x1 = A . mean(source) + sigma * noise, reshaped to [n, N, D]."""
    a = torch.randn(SOURCE_WIDTH, LATENTS * WIDTH, generator=generator) / SOURCE_WIDTH ** 0.5

    def draw(n: int):
        source = torch.randn(n, SOURCE_LEN, SOURCE_WIDTH, generator=generator)
        mean = (source.mean(1) @ a).view(n, LATENTS, WIDTH)
        return source, mean + SIGMA * torch.randn(n, LATENTS, WIDTH, generator=generator), mean
    return draw


def _recovery(model: DiTDenoiser, draw, generator: torch.Generator) -> tuple[float, float]:
    """RMS error of the sampled conditional means over the RMS of the true means, and the sampled spread."""
    source, _, mean = draw(16)
    repeats = 256
    samples = euler_sample(model, source.repeat_interleave(repeats, 0), steps=10, generator=generator)
    samples = samples.view(16, repeats, LATENTS, WIDTH)
    error = (samples.mean(1) - mean).pow(2).mean().sqrt() / mean.pow(2).mean().sqrt()
    return float(error), float(samples.std(1).mean())


@pytest.mark.parametrize("condition", [pytest.param(c, marks=pytest.mark.slow) if c != "mean_pool" else c
                                       for c in CONDITIONS])
def test_rectified_flow_recovers_a_known_conditional_gaussian(condition):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is several times faster than two here
    try:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        draw = _task(generator)
        model = DiTDenoiser(LATENTS, WIDTH, SOURCE_WIDTH, width=32, depth=1, heads=4, condition=condition)
        untrained_error, _ = _recovery(model, draw, generator)
        ema = EMA(model, 0.99)
        steps = 800
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(steps):
            source, target, _ = draw(64)
            loss = rectified_flow_loss(model, target, source, generator=generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            ema.update(model)
        error, spread = _recovery(ema.model, draw, generator)
    finally:
        torch.set_num_threads(threads)
    assert untrained_error > 0.9  # the check can fail: an untrained velocity (zero) leaves pure noise
    assert error < 0.15, f"conditional means recovered with relative RMS error {error:.3f}"
    assert 0.7 * SIGMA < spread < 1.3 * SIGMA, f"sampled spread {spread:.3f} for sigma {SIGMA}"


@pytest.mark.parametrize("condition", CONDITIONS)
def test_padded_source_positions_change_nothing(condition):
    torch.manual_seed(1)
    model = DiTDenoiser(LATENTS, WIDTH, SOURCE_WIDTH, width=16, depth=2, heads=2, condition=condition)
    for p in model.parameters():  # leave adaLN-Zero's identity start so the source matters
        torch.nn.init.normal_(p, std=0.2)
    x, t = torch.randn(2, LATENTS, WIDTH), torch.tensor([0.3, 0.8])
    source = torch.randn(2, SOURCE_LEN, SOURCE_WIDTH)
    padded = torch.cat([source, 100 * torch.randn(2, 2, SOURCE_WIDTH)], dim=1)
    mask = torch.cat([torch.ones(2, SOURCE_LEN), torch.zeros(2, 2)], dim=1)
    plain = model(x, t, source)
    assert torch.allclose(model(x, t, padded, mask), plain, atol=1e-5)
    assert not torch.allclose(model(x, t, padded), plain, atol=1e-3)  # unmasked, the padding would count


def test_a_fresh_denoiser_predicts_zero_velocity_and_sampling_returns_the_noise():
    model = DiTDenoiser(LATENTS, WIDTH, SOURCE_WIDTH, width=16, depth=1, heads=2)
    source = torch.randn(3, SOURCE_LEN, SOURCE_WIDTH)
    assert torch.equal(model(torch.randn(3, LATENTS, WIDTH), torch.rand(3), source), torch.zeros(3, LATENTS, WIDTH))
    noise = torch.randn((3, LATENTS, WIDTH), generator=torch.Generator().manual_seed(5))
    assert torch.equal(euler_sample(model, source, steps=4, generator=torch.Generator().manual_seed(5)), noise)


def test_ema_moves_the_shadow_weights_by_one_minus_decay():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, 0.9)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, before + 0.1)
    assert not ema.model.weight.requires_grad


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="condition must be one of"):
        DiTDenoiser(2, 4, 4, width=16, heads=2, condition="sum")
    with pytest.raises(ValueError, match="width 10 is not divisible by heads 4"):
        DiTDenoiser(2, 4, 4, width=10, heads=4)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        euler_sample(DiTDenoiser(2, 4, 4, width=16, heads=2), torch.randn(1, 3, 4), steps=0)
    with pytest.raises(ValueError, match="EMA decay"):
        EMA(torch.nn.Linear(1, 1), 1.0)
