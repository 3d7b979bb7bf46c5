"""Ready-made NumPyro programs used by the tour, the tutorials and the tests.

Each takes its data as arguments and leaves the observations as a keyword that
defaults to ``None``, so the same program simulates, fits and predicts.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


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
