"""Ready-made Pyro programs, the counterparts of :mod:`bayeskit.models.examples`
written with ``pyro.sample``: the same model in both languages gives the same answer.

Each takes its inputs as torch tensors and the observations as ``y`` (default
``None``), with the likelihood inside ``pyro.plate("data", N)`` so the
stochastic-gradient routines can minibatch it.
"""

import pyro
import pyro.distributions as dist
import torch


def linear_regression(X, y=None, *, noise_scale=1.0, prior_scale=1.0):
    """``w ~ N(0, prior_scale^2 I)``, ``y ~ N(X w, noise_scale^2)``; closed-form posterior in
    :func:`bayeskit.models.examples.linear_regression_posterior`."""
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), prior_scale).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ w, noise_scale), obs=y)


def logistic_regression(X, y=None, *, prior_scale=1.0):
    """``w ~ N(0, prior_scale^2 I)``, ``y ~ Bernoulli(sigmoid(X w))``."""
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), prior_scale).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)
