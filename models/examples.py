"""Ready-made NumPyro programs, optimisation test functions with known minima, and a
simulated neural population with known filters, used by the tour, the tutorials, the tests and the benchmarks.

Each program takes its data as arguments and leaves the observations as a keyword
that defaults to ``None``, so the same program simulates, fits and predicts.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from . import bases
from ._spikes import PopulationGLM


def eight_schools_centered(sigma, y=None):
    """Rubin's eight schools, centred: the funnel NUTS diverges in."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(sigma)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(sigma, y=None):
    """Eight schools with ``theta = mu + tau * theta_tilde`` (posteriordb's parameterisation)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(sigma)):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def linear_regression(X, y=None, *, noise_scale=1.0, prior_scale=1.0):
    """Bayesian linear regression with known noise: ``w ~ N(0, prior_scale^2 I)``,
    ``y ~ N(X w, noise_scale^2)``. Conjugate: see :func:`linear_regression_posterior`."""
    w = numpyro.sample("w", dist.Normal(0.0, prior_scale).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, noise_scale), obs=y)


def linear_regression_posterior(X, y, *, noise_scale=1.0, prior_scale=1.0):
    """Closed-form posterior mean and covariance of :func:`linear_regression`'s ``w``."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    precision = X.T @ X / noise_scale**2 + np.eye(X.shape[1]) / prior_scale**2
    covariance = np.linalg.inv(precision)
    return covariance @ X.T @ y / noise_scale**2, covariance


def kidiq_regression(mom_iq, mom_hs, kid_score=None):
    """Child's score on mother's IQ (centred, per 10 points) and high-school completion,
    with an unknown noise scale (Gelman & Hill 2007, ch. 3)."""
    iq = (jnp.asarray(mom_iq) - 100.0) / 10.0
    intercept = numpyro.sample("intercept", dist.Normal(80.0, 20.0))
    beta_iq = numpyro.sample("beta_iq", dist.Normal(0.0, 10.0))
    beta_hs = numpyro.sample("beta_hs", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(20.0))
    with numpyro.plate("child", iq.shape[0]):
        mean = intercept + beta_iq * iq + beta_hs * jnp.asarray(mom_hs)
        numpyro.sample("kid_score", dist.Normal(mean, sigma), obs=kid_score)


# -- optimisation test functions (Surjanovic & Bingham's virtual library of simulation experiments) --

BRANIN_BOUNDS = [(-5.0, 10.0), (0.0, 15.0)]
BRANIN_MINIMUM = 0.397887  # at (-pi, 12.275), (pi, 2.275) and (9.42478, 2.475)
HARTMANN6_BOUNDS = [(0.0, 1.0)] * 6
HARTMANN6_MINIMUM = -3.32237  # at (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
HARTMANN6_SECOND_MINIMUM = -3.20316  # the best of its other basins, near (0.40, 0.88, 0.85, 0.57, 0.13, 0.04)
_HARTMANN6_A = np.array(
    [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
)
_HARTMANN6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_HARTMANN6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def branin(x) -> float:
    """The Branin-Hoo function of ``x`` (2,): three global minima, a smooth bowl."""
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return float((x[1] - b * x[0] ** 2 + c * x[0] - 6) ** 2 + 10 * (1 - t) * np.cos(x[0]) + 10)


def hartmann6(x) -> float:
    """The six-dimensional Hartmann function on the unit cube: one global minimum and
    several local ones."""
    return float(-_HARTMANN6_ALPHA @ np.exp(-np.sum(_HARTMANN6_A * (np.asarray(x) - _HARTMANN6_P) ** 2, axis=1)))


class SimulatedPopulation(NamedTuple):
    model: PopulationGLM
    truth: dict  # the parameters the spikes were simulated from
    stimulus: np.ndarray  # (T,) white Gaussian noise
    spikes: np.ndarray  # (T, 3) counts in 1 ms bins


def retinal_population(num_bins: int = 200_000, *, rng_key: int = 0) -> SimulatedPopulation:
    """Three retina-like neurons under a full-field white-noise flicker, 1 ms bins.

    Two ON cells and one OFF cell with biphasic stimulus filters (100 ms); every cell
    has the same history filter, refractory and then bursty; neuron 0 is excited by
    neuron 1 and neuron 2 is inhibited by neuron 0. Baseline rates are 15 to 25 spikes/s.
    """
    dt = 0.001
    model = PopulationGLM(bases.RaisedCosine(6, 0.1, dt), bases.RaisedCosine(5, 0.05, dt), dt=dt)
    on = 0.12 * np.array([0.3, 1.0, 0.6, -0.4, -0.3, -0.1])
    coupling = np.zeros((3, 3, 5))
    coupling[np.arange(3), np.arange(3)] = [-3.0, -1.0, 0.5, 0.3, 0.0]
    coupling[0, 1] = [0.5, 0.8, 0.3, 0.0, 0.0]
    coupling[2, 0] = [-0.5, -0.8, -0.3, 0.0, 0.0]
    truth = {
        "intercept": np.log([15.0, 20.0, 25.0]),
        "stimulus_weights": np.stack([on, 0.8 * on, -on])[:, None, :],
        "coupling_weights": coupling,
    }
    stimulus = np.random.default_rng(rng_key).normal(size=num_bins)
    return SimulatedPopulation(model, truth, stimulus, model.simulate(truth, stimulus, rng_key=rng_key + 1))
