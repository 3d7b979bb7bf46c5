"""The time-rescaling goodness-of-fit test for point-process models of spike trains.

Under the true conditional intensity, the integrated hazard between successive
spikes is Exp(1), so ``z = 1 - exp(-tau)`` is uniform and a Kolmogorov–Smirnov test
compares it with U(0, 1) (Brown et al. 2002). In discrete time a spike is known
only to its bin; putting it at the bin's edge biases the test when spike
probabilities per bin are not small. The correction of Haslinger, Pipa & Brown
(2010) draws the hazard spent inside the spike bin from its conditional law:

    tau_k = sum_{t_{k-1} < j < t_k} -log(1 - q_j)  -  log(1 - r_k q_{t_k}),   r_k ~ U(0, 1),

with ``q_j`` the model's probability of at least one spike in bin ``j``. This is exact
for any model of binned spike trains; bins holding several spikes count as one
spike (their number is reported per neuron).
"""

from typing import NamedTuple

import jax
import numpy as np
import scipy.stats

from bayeskit.models._keys import as_key

# the 95% band of the KS plot: the two-sided KS critical value, 1.36 / sqrt(n)
_KS_95 = 1.358


class KSCurve(NamedTuple):
    model_quantiles: np.ndarray  # (n,) (k - 1/2) / n, the uniform quantiles
    empirical_quantiles: np.ndarray  # (n,) sorted rescaled times z
    band: float  # half-width of the 95% band around the diagonal


class NeuronTest(NamedTuple):
    neuron: int
    num_spikes: int  # spike bins used (bins with at least one spike)
    multi_spike_bins: int  # bins with two or more spikes, counted once
    ks_statistic: float
    p_value: float


class TimeRescalingTest(NamedTuple):
    ks_statistic: float  # pooled over neurons
    p_value: float
    per_neuron: list[NeuronTest]
    curve: KSCurve
    rescaled: list[np.ndarray]  # per neuron: the uniform variates z


def time_rescaling_test(res, stimulus, spikes, *, rng_key=0) -> TimeRescalingTest:
    """Kolmogorov–Smirnov test of a fitted spike-train model by time rescaling.

    Parameters
    ----------
    res : Result
        From :func:`fit_glm` on a ``PopulationGLM``, an ``LNP``, or a Poisson,
        negative-binomial or Bernoulli ``GLM`` (whose rows are then the time bins).
    stimulus, spikes
        The recording to test (training data or held-out data): ``stimulus`` as given
        to the fit (``X`` for a GLM) and the spike counts ``(T,)`` or ``(T, n)``.
    rng_key : int or JAX key
        For the uniform draws of the discrete-time correction.

    Returns
    -------
    TimeRescalingTest
        ``ks_statistic`` and ``p_value`` pooled over neurons, ``per_neuron`` tests,
        the KS-plot ``curve`` with its 95% band, and the ``rescaled`` variates.

    References
    ----------
    Brown, Barbieri, Ventura, Kass & Frank (2002), Neural Computation 14:325.
    Haslinger, Pipa & Brown (2010), Neural Computation 22:2477.
    """
    model = getattr(res, "model", None)
    if not hasattr(model, "spike_probability"):
        raise TypeError(f"res must be a fit_glm result of a spike-train model or GLM, got model {type(model).__name__}")
    probability = np.asarray(model.spike_probability(res.params, stimulus, spikes), float)
    counts = np.asarray(spikes, float).reshape(probability.shape)
    hazard = -np.log1p(-probability)  # per bin; infinite where the model is certain of a spike
    uniforms = np.asarray(jax.random.uniform(as_key(rng_key), counts.shape, dtype=np.float64))

    per_neuron, rescaled = [], []
    for j in range(counts.shape[1]):
        spike_bins = np.nonzero(counts[:, j] > 0)[0]
        z = _rescaled_times(hazard[:, j], probability[:, j], spike_bins, uniforms[spike_bins, j])
        rescaled.append(z)
        stat, p = scipy.stats.kstest(z, "uniform") if z.size else (np.nan, np.nan)
        per_neuron.append(NeuronTest(j, int(z.size), int(np.sum(counts[:, j] > 1)), float(stat), float(p)))
    pooled = np.concatenate(rescaled)
    if pooled.size == 0:
        raise ValueError("spikes holds no spikes: there is nothing to rescale")
    stat, p = scipy.stats.kstest(pooled, "uniform")
    n = pooled.size
    curve = KSCurve((np.arange(1, n + 1) - 0.5) / n, np.sort(pooled), _KS_95 / np.sqrt(n))
    return TimeRescalingTest(float(stat), float(p), per_neuron, curve, rescaled)


def _rescaled_times(hazard, probability, spike_bins, uniforms) -> np.ndarray:
    """``z_k = 1 - exp(-tau_k)`` for each spike, the first measured from the recording's start."""
    if spike_bins.size == 0:
        return np.zeros(0)
    starts = np.concatenate([[0], spike_bins[:-1] + 1])
    # hazard of the empty bins [start_k, t_k) by segment (an infinite one stays in its segment)
    bounds = np.stack([starts, spike_bins], axis=1).ravel()
    whole_bins = np.where(starts < spike_bins, np.add.reduceat(hazard, bounds)[::2], 0.0)
    inside = -np.log1p(-uniforms * probability[spike_bins])
    return -np.expm1(-(whole_bins + inside))
