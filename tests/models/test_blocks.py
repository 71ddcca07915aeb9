"""Blocks: gain, weighted sum, first-order lag, noisy sensor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.models.support import make, run
from twin_server.models.blocks import FirstOrderLag, Gain, NoisySensor, Sum


class TestGainAndSum:
    def test_gain(self) -> None:
        """The gain scales its input exactly."""
        assert run(make(Gain, gain=-2.5), 0.1, 1, input=4.0)[-1] == {"output": -10.0}

    @pytest.mark.parametrize(("weights", "expected"), [
        pytest.param((1.0, 1.0, 1.0), 6.0, id="plain-sum"),
        pytest.param((1.0, -1.0, 0.0), -1.0, id="difference"),
        pytest.param((0.5, 0.5, 0.0), 1.5, id="mean-of-two"),
    ])
    def test_weighted_sum(self, weights: tuple[float, float, float], expected: float) -> None:
        """output = weight_a*a + weight_b*b + weight_c*c with a, b, c = 1, 2, 3."""
        block = make(Sum, weight_a=weights[0], weight_b=weights[1], weight_c=weights[2])
        assert run(block, 0.1, 1, a=1.0, b=2.0, c=3.0)[-1]["output"] == expected

    def test_unconnected_inputs_drop_out(self) -> None:
        """Inputs left at their default (0) add nothing."""
        assert run(make(Sum), 0.1, 1, a=7.0)[-1]["output"] == 7.0


class TestFirstOrderLag:
    @pytest.mark.parametrize("dt", [pytest.param(0.001, id="1ms"), pytest.param(0.1, id="100ms"),
                                    pytest.param(5.0, id="5s")])
    def test_step_response(self, dt: float) -> None:
        """y(t) = K*u*(1 - exp(-t/T)) at every tick over 10 T, within 1e-12."""
        lag = make(FirstOrderLag, time_constant=2.0, gain=3.0)
        steps = round(20.0 / dt)
        for i, out in enumerate(run(lag, dt, steps, input=1.5), start=1):
            assert out["output"] == pytest.approx(4.5 * -math.expm1(-i * dt / 2.0), abs=1e-12)

    def test_starts_from_initial_state(self) -> None:
        """From an initial output y0 the lag decays as y0*exp(-t/T) with zero input (1e-12)."""
        lag = make(FirstOrderLag, {"output": 2.0}, time_constant=0.5)
        out = run(lag, 0.01, 100, input=0.0)[-1]
        assert out["output"] == pytest.approx(2.0 * math.exp(-2.0), abs=1e-12)
        assert FirstOrderLag.direct_feedthrough is False

    def test_tuned_time_constant_applies_next_step(self) -> None:
        """A new time constant gives the next step the new rate."""
        lag = make(FirstOrderLag, time_constant=1.0)
        run(lag, 0.1, 5, input=1.0)
        y = lag.get_states()["output"]
        lag.set_parameter("time_constant", 10.0)
        out = run(lag, 0.1, 1, start=5, input=1.0)[-1]
        assert out["output"] == pytest.approx(y + (1.0 - y) * -math.expm1(-0.01), abs=1e-15)


class TestNoisySensor:
    def test_same_seed_same_noise(self) -> None:
        """Two sensors with one seed produce identical outputs; another seed differs."""
        a, b, c = (make(NoisySensor, seed=s, noise_std=0.5) for s in (7, 7, 8))
        out_a, out_b, out_c = (run(m, 0.1, 1000, input=1.0) for m in (a, b, c))
        assert out_a == out_b
        assert out_a != out_c

    def test_reset_reseeds(self) -> None:
        """Reset starts the noise sequence again from the seed."""
        sensor = make(NoisySensor, seed=3)
        first = run(sensor, 0.1, 300, input=0.0)
        sensor.reset(sensor.parameters, {})
        assert run(sensor, 0.1, 300, input=0.0) == first

    @pytest.mark.parametrize("at", [pytest.param(0, id="at-reset"),
                                    pytest.param(100, id="mid-block"),
                                    pytest.param(256, id="block-boundary")])
    def test_restore_reproduces_the_noise(self, at: int) -> None:
        """A snapshot taken after ``at`` steps replays the same noise after restore."""
        sensor = make(NoisySensor, seed=11)
        run(sensor, 0.1, at, input=0.0)
        snap = sensor.snapshot()
        first = run(sensor, 0.1, 600, start=at, input=2.0)
        sensor.restore(snap)
        assert run(sensor, 0.1, 600, start=at, input=2.0) == first

    def test_statistics(self) -> None:
        """Over 100 000 samples the noise has mean 0 (5 standard errors) and std sigma (2 %)."""
        sigma, n = 0.3, 100_000
        sensor = make(NoisySensor, seed=2024, noise_std=sigma)
        noise = np.array([o["output"] for o in run(sensor, 0.01, n, input=5.0)]) - 5.0
        assert abs(noise.mean()) < 5 * sigma / math.sqrt(n)
        assert noise.std() == pytest.approx(sigma, rel=0.02)
        # no correlation from one sample to the next (5 standard errors of 1/sqrt(n))
        assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 5 / math.sqrt(n)

    def test_zero_noise_passes_input_through(self) -> None:
        """With noise_std = 0 the output equals the input exactly."""
        assert {o["output"] for o in run(make(NoisySensor, noise_std=0.0), 0.1, 50,
                                         input=3.25)} == {3.25}

    def test_retuned_noise_scales_the_same_sequence(self) -> None:
        """Doubling noise_std mid-run doubles the noise the sensor would have drawn anyway."""
        a, b = make(NoisySensor, seed=5, noise_std=0.1), make(NoisySensor, seed=5, noise_std=0.1)
        run(a, 0.1, 10, input=0.0)
        run(b, 0.1, 10, input=0.0)
        b.set_parameter("noise_std", 0.2)
        for out_a, out_b in zip(run(a, 0.1, 20, input=0.0), run(b, 0.1, 20, input=0.0),
                                strict=True):
            assert out_b["output"] == pytest.approx(2 * out_a["output"], rel=1e-15)

    def test_negative_seed_is_accepted(self) -> None:
        """Any Int32 seed works, negative ones included, and differs from its positive twin."""
        neg = run(make(NoisySensor, seed=-1), 0.1, 5, input=0.0)
        pos = run(make(NoisySensor, seed=1), 0.1, 5, input=0.0)
        assert neg != pos
