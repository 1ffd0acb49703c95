"""The TRE controller's pieces: aggregation, EMA, mapping and random parameters stay as documented."""

import math

import pytest
import torch

from harness.kinds.tre_sweep.sampling import uniform_stream
from harness.kinds.tre_sweep.controller import BaselineController, RandomController
from harness.kinds.tre_sweep.signal import EMA, aggregate, params_from_unit, random_params, unit_from_signal
from registry.kinds.tre_sweep import Directions, FixedParams, LinearClipMapping, Ranges, SigmoidMapping

RANGES = Ranges.model_validate({"temperature": {"lo": 0.6, "hi": 0.8}, "top_p": {"lo": 0.85, "hi": 1.0},
                                "top_k": {"lo": 10, "hi": 60}})


def _inside(temperature, top_p, top_k, ranges=RANGES):
    assert ((temperature >= ranges.temperature.lo) & (temperature <= ranges.temperature.hi)).all()
    assert ((top_p >= ranges.top_p.lo) & (top_p <= ranges.top_p.hi)).all()
    assert ((top_k >= ranges.top_k.lo) & (top_k <= ranges.top_k.hi)).all() and top_k.dtype == torch.long


def test_aggregate_mean_abs_and_signed_over_finite_units():
    z = torch.tensor([[1.0, -3.0, 2.0], [float("nan"), 4.0, -2.0], [float("nan")] * 3], dtype=torch.float64)
    torch.testing.assert_close(aggregate(z, "mean_abs_z")[:2], torch.tensor([2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(aggregate(z, "mean_z")[:2], torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert math.isnan(aggregate(z, "mean_z")[2])
    assert aggregate(torch.zeros(4, 0), "mean_z").isnan().all(), "no units at all gives no signal"


def test_ema_starts_at_the_first_value_and_holds_on_missing():
    ema = EMA(0.25, rows=2)
    nan = float("nan")
    assert ema.update(torch.tensor([4.0, nan])).tolist()[0] == 4.0
    s = ema.update(torch.tensor([8.0, 2.0]))
    assert s[0] == pytest.approx(0.25 * 8 + 0.75 * 4) and s[1] == 2.0  # row 1's first value starts it
    s = ema.update(torch.tensor([nan, 6.0]))
    assert s[0] == pytest.approx(5.0) and s[1] == pytest.approx(0.25 * 6 + 0.75 * 2)
    # alpha = 1 is no smoothing
    raw = torch.tensor([[1.0], [-2.0], [5.0]])
    plain = EMA(1.0, rows=1)
    assert [plain.update(x).item() for x in raw] == [1.0, -2.0, 5.0]


def test_ema_of_a_step_converges_geometrically():
    ema = EMA(0.3, rows=1)
    ema.update(torch.tensor([0.0]))
    values = [ema.update(torch.tensor([1.0])).item() for _ in range(5)]
    assert values == pytest.approx([1 - 0.7 ** n for n in range(1, 6)])


def test_sigmoid_and_linear_clip_mappings():
    s = torch.tensor([-100.0, -1.0, 0.0, 1.0, 100.0, float("nan")])
    u = unit_from_signal(SigmoidMapping(name="sigmoid", gain=2.0), s)
    assert u[2] == 0.5 and u[5] == 0.5, "0 and a missing signal are 'typical'"
    assert u[3] == pytest.approx(1 / (1 + math.exp(-2))) and u[0] >= 0 and u[4] <= 1
    lin = unit_from_signal(LinearClipMapping(name="linear_clip", gain=1.0), s)
    assert lin.tolist()[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_neural_mapping_stays_in_range_and_follows_directions():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    temperature, top_p, top_k = params_from_unit(u, RANGES, Directions())
    _inside(temperature, top_p, top_k)
    assert temperature[0] == 0.6 and temperature[-1] == pytest.approx(0.8)  # up
    assert top_k[0] == 60 and top_k[-1] == 10  # down
    assert top_p[50] == pytest.approx(0.925) and top_k[50] == 35
    assert (temperature.diff() >= 0).all() and (top_k.diff() <= 0).all()
    flipped = params_from_unit(u, RANGES, Directions(temperature="down", top_p="down", top_k="up"))
    assert flipped[0][0] == pytest.approx(0.8) and flipped[1][0] == 1.0 and flipped[2][0] == 10
    # whatever the signal, the parameters stay in range
    wild = unit_from_signal(SigmoidMapping(name="sigmoid", gain=50.0), torch.randn(1000, dtype=torch.float64) * 1e3)
    _inside(*params_from_unit(wild, RANGES, Directions()))


def test_random_parameters_are_uniform_within_the_ranges():
    u = uniform_stream(7, (20000, 3))
    temperature, top_p, top_k = random_params(u, RANGES)
    _inside(temperature, top_p, top_k)
    assert float(temperature.mean()) == pytest.approx(0.7, abs=0.003)
    assert float(top_p.mean()) == pytest.approx(0.925, abs=0.003)
    counts = torch.bincount(top_k - 10, minlength=51).float()
    assert counts.shape[0] == 51 and counts.min() > 0, "every top_k from 10 to 60 occurs"
    assert float(counts.std() / counts.mean()) < 0.1
    edges = random_params(torch.tensor([[0.0, 0.0, 0.0], [0.9999999, 0.9999999, 0.9999999]]), RANGES)
    assert edges[2].tolist() == [10, 60]


def test_random_and_baseline_controllers_per_row():
    u = uniform_stream(3, (4, 6, 3))
    ctrl = RandomController(RANGES, u)
    steps = [ctrl.step(t) for t in range(6)]
    for p in steps:
        _inside(p.temperature, p.top_p, p.top_k)
    assert steps[0].temperature[0] == pytest.approx(0.6 + float(u[0, 0, 0]) * 0.2)
    assert not torch.equal(steps[0].temperature, steps[1].temperature)
    base = BaselineController(FixedParams(), rows=4).step(0)
    assert base.temperature.tolist() == [0.7] * 4 and base.top_p.tolist() == [0.9] * 4 and base.top_k.tolist() == [50] * 4
