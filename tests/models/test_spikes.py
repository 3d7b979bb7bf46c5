"""Bases, design convolutions, spike-triggered moments and the population simulator,
each against a direct computation."""

import numpy as np
import pytest

from bayeskit.models import LNP, PopulationGLM, bases, spike_triggered_average, spike_triggered_covariance
from bayeskit.models._spikes import lagged


def test_raised_cosines_overlap_to_a_flat_sum_and_end_at_the_window():
    basis = bases.RaisedCosine(n_basis=8, window=0.2, dt=0.001)
    matrix = basis.matrix
    assert matrix.shape == (200, 8)
    assert matrix[0, 0] == pytest.approx(1.0)  # the first bump peaks at lag 0
    # each bump spans four spacings, so away from the ends the bumps sum to two
    peaks = np.argmax(matrix, axis=0)
    np.testing.assert_allclose(matrix[peaks[1] + 1 : peaks[-2]].sum(1), 2.0, atol=1e-12)
    assert matrix[-1, -1] < 0.01 and np.all(np.diff(peaks) > 0)


def test_bsplines_are_a_partition_of_unity():
    matrix = bases.BSpline(n_basis=7, window=0.1, dt=0.001).matrix
    assert matrix.shape == (100, 7)
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=1e-12)


@pytest.mark.parametrize("first_lag", [0, 1, 3])
def test_convolution_equals_the_direct_sum(first_lag):
    rng = np.random.default_rng(0)
    signal, matrix = rng.normal(size=(300, 2)), rng.normal(size=(20, 3))
    out = bases.convolve(signal, matrix, first_lag=first_lag)
    direct = np.zeros_like(out)
    for t in range(300):
        for lag in range(20):
            if t - first_lag - lag >= 0:
                direct[t] += signal[t - first_lag - lag][:, None] * matrix[lag][None]
    np.testing.assert_allclose(out, direct, atol=1e-10)


def test_spike_triggered_average_recovers_an_lnp_filter_under_white_noise():
    rng = np.random.default_rng(1)
    stimulus = rng.normal(size=(200_000, 2))
    k = np.stack([np.sin(np.arange(15) / 3) * np.exp(-np.arange(15) / 6), 0.5 * np.exp(-np.arange(15) / 4)], 1) * 0.3
    spikes = rng.poisson(np.exp(-2.0 + np.einsum("tld,ld->t", lagged(stimulus, 15), k)))
    sta = spike_triggered_average(stimulus, spikes, 15)
    assert sta.shape == (15, 2)
    cosine = sta.ravel() @ k.ravel() / np.linalg.norm(sta) / np.linalg.norm(k)
    assert cosine > 0.95


def test_spike_triggered_moments_equal_weighted_moments_of_the_windows():
    rng = np.random.default_rng(2)
    stimulus, spikes = rng.normal(size=500), rng.poisson(0.3, size=500)
    windows = np.array([stimulus[t - np.arange(4)] for t in range(3, 500)])
    counts = spikes[3:]
    np.testing.assert_allclose(spike_triggered_average(stimulus, spikes, 4)[:, 0], counts @ windows / counts.sum())
    np.testing.assert_allclose(spike_triggered_covariance(stimulus, spikes, 4),
                               np.cov(windows.T, fweights=counts), atol=1e-12)  # fmt: skip


def test_simulation_follows_the_rate_and_flags_unstable_couplings():
    basis = bases.RaisedCosine(3, 0.01, 0.001)
    pop = PopulationGLM(basis, basis, dt=0.001)
    quiet = {"intercept": np.log([50.0, 10.0]), "stimulus_weights": np.zeros((2, 1, 3)),
             "coupling_weights": np.zeros((2, 2, 3))}  # fmt: skip
    spikes = pop.simulate(quiet, np.zeros(100_000), rng_key=0)
    np.testing.assert_allclose(spikes.mean(0) / 0.001, [50.0, 10.0], rtol=0.05)
    # strong inhibition is stable, however large its gain
    assert pop.branching_ratio(dict(quiet, coupling_weights=np.full((2, 2, 3), -5.0))) == 0.0
    loud = dict(quiet, coupling_weights=np.full((2, 2, 3), 3.0))
    assert pop.branching_ratio(loud) >= 1
    with pytest.warns(RuntimeWarning, match="branching ratio"), pytest.raises(FloatingPointError, match="overflow"):
        pop.simulate(loud, np.zeros(20_000), rng_key=0)
    with pytest.raises(ValueError, match=r"params must be a dict with \['intercept', 'stimulus_weights'"):
        pop.simulate({"intercept": np.zeros(2)}, np.zeros(100))
    with pytest.raises(ValueError, match=r"params\['stimulus_weights'\] has 6 values; 2 neurons with a 2-column"):
        pop.simulate(quiet, np.zeros((100, 2)))
    with pytest.raises(ValueError, match=r"params\['intercept'\] must be finite"):
        pop.simulate(dict(quiet, intercept=np.array([np.nan, 0.0])), np.zeros(100))


def test_bad_input_is_named():
    from bayeskit.inference import fit_glm

    basis = bases.RaisedCosine(4, 0.05, 0.001)
    pop = PopulationGLM(basis, basis, dt=0.001)
    with pytest.raises(ValueError, match="longer than the recording"):
        fit_glm(pop, np.zeros(30), np.zeros((30, 2)), progress=False)
    with pytest.raises(ValueError, match="must match"):
        fit_glm(pop, np.zeros(300), np.zeros((200, 2)), progress=False)
    with pytest.raises(ValueError, match="spikes must be finite"):
        fit_glm(pop, np.zeros(300), np.full((300, 2), np.nan), progress=False)
    with pytest.raises(ValueError, match="non-negative integer"):
        spike_triggered_average(np.zeros(100), -np.ones(100), 5)
    with pytest.raises(ValueError, match="filter_length 500 is longer"):
        spike_triggered_average(np.zeros(100), np.ones(100), 500)
    with pytest.raises(ValueError, match="stimulus must be finite"):
        fit_glm(LNP(5), np.full(100, np.nan), np.ones(100), progress=False)
    with pytest.raises(ValueError, match="gives 5 bins, fewer than n_basis"):
        bases.RaisedCosine(8, 0.005, 0.001)
    with pytest.raises(ValueError, match="nonlinearity"):
        LNP(5, nonlinearity="relu")
    with pytest.raises(ValueError, match="first_lag must be an int >= 0, got -1"):
        bases.convolve(np.zeros(100), basis, first_lag=-1)
    with pytest.raises(ValueError, match="signal and basis must be finite"):
        bases.convolve(np.r_[np.nan, np.zeros(99)], basis)
    with pytest.raises(ValueError, match=r"history_basis has bins of dt=0.002 s but the model's dt is 0.001 s"):
        PopulationGLM(basis, bases.RaisedCosine(4, 0.05, 0.002), dt=0.001)


def test_psth_of_the_true_model_explains_the_recorded_one():
    basis = bases.RaisedCosine(4, 0.05, 0.001)
    pop = PopulationGLM(basis, basis, dt=0.001)
    params = {"intercept": np.log([30.0, 40.0]), "stimulus_weights": np.array([[[0.3, 0.6, 0.2, 0.0]],
              [[-0.3, -0.5, 0.0, 0.1]]]), "coupling_weights": np.zeros((2, 2, 4))}  # fmt: skip
    params["coupling_weights"][[0, 1], [0, 1], 0] = -2.0
    segment = np.random.default_rng(3).normal(size=1000)
    recorded = pop.simulate(params, np.tile(segment, 60), rng_key=5).reshape(60, 1000, 2)
    same = pop.compare_psth(params, segment, recorded, smoothing=0.01, rng_key=6)
    flat = dict(params, stimulus_weights=np.zeros((2, 1, 4)))
    other = pop.compare_psth(flat, segment, recorded, smoothing=0.01, rng_key=6)
    assert same.observed.shape == same.simulated.shape == (1000, 2)
    assert np.all(same.correlation > 0.95) and np.all(same.explained_variance > 0.9)
    assert np.all(other.explained_variance < 0)  # the stimulus-locked structure is missed
    with pytest.raises(ValueError, match="trials must have shape"):
        pop.compare_psth(params, segment, recorded[:, :500], rng_key=0)
