"""Gaussian-process regression: the prior as a model, and its exact posterior.

``GaussianProcess(kernel, noise_variance, mean).condition(X, y)`` returns a
:class:`ConditionedGP`, another immutable model that predicts (GPJax's and tinygp's
``condition``). The kernel matrix is factorised by the shared robust Cholesky,
which adds diagonal jitter only when the matrix is numerically indefinite and
reports how much.
"""

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from ._numerics import robust_cholesky
from .kernels import Kernel

_LOG_2PI = math.log(2 * math.pi)
# rows closer than this (relative to the spread of X) count as near-duplicates
_DUPLICATE_TOLERANCE = 1e-8


@dataclass(frozen=True)
class GaussianProcess:
    r"""A Gaussian-process prior with Gaussian observation noise.

    :math:`f \sim \mathcal{GP}(m, k)`, :math:`y_i = f(x_i) + \varepsilon_i`,
    :math:`\varepsilon_i \sim N(0, \sigma^2_i)`.

    Parameters
    ----------
    kernel : Kernel
        The covariance function, e.g. ``kernels.Matern52(lengthscale=0.5) + kernels.White(1e-3)``.
    noise_variance : float or array (N,)
        Observation noise variance, one value or one per training point (>= 0).
    mean : float
        Constant prior mean.

    Examples
    --------
    >>> import numpy as np
    >>> from bayeskit.models import kernels
    >>> X = np.linspace(0, 1, 5)
    >>> post = GaussianProcess(kernels.RBF(0.3), noise_variance=1e-4).condition(X, np.sin(6 * X))
    >>> mean, var = post.predict(np.array([0.5]))
    >>> round(float(mean[0]), 2), bool(var[0] < 1e-3)
    (0.14, True)
    """

    kernel: Kernel
    noise_variance: float = 1.0
    mean: float = 0.0

    def __post_init__(self):
        if not isinstance(self.kernel, Kernel):
            raise TypeError(f"kernel must be a bayeskit.models.kernels kernel, got {type(self.kernel).__name__}")
        noise = np.asarray(self.noise_variance, dtype=float)
        if noise.ndim > 1 or not np.all(np.isfinite(noise)) or np.any(noise < 0):
            raise ValueError(f"noise_variance must be finite and >= 0 (a scalar or one per point), got {noise!r}")
        if not math.isfinite(float(self.mean)):
            raise ValueError(f"mean must be finite, got {self.mean!r}")

    def condition(self, X, y) -> "ConditionedGP":
        """The exact posterior given observations ``y`` at inputs ``X``."""
        X, y = _check_training_data(X, y)
        if np.ndim(self.noise_variance) == 1 and np.shape(self.noise_variance)[0] != y.shape[0]:
            raise ValueError(
                f"noise_variance has {np.shape(self.noise_variance)[0]} values but there are {y.shape[0]} points"
            )
        noise = jnp.broadcast_to(jnp.asarray(self.noise_variance, X.dtype), y.shape)
        factor, alpha, jitter, log_ml = _condition(self.kernel, X, y - self.mean, noise)
        if not np.all(np.isfinite(np.asarray(factor))):
            raise ValueError(
                "the kernel matrix plus noise is not positive definite even with jitter "
                f"{float(jitter):.3g} on its diagonal; check the kernel's hyperparameters"
            )
        return ConditionedGP(
            prior=self,
            X=X,
            y=y,
            factor=factor,
            alpha=alpha,
            jitter=float(jitter),
            log_marginal_likelihood=float(log_ml),
            near_duplicates=_count_near_duplicates(np.asarray(X)),
        )


@dataclass(frozen=True)
class ConditionedGP:
    """The posterior of a :class:`GaussianProcess` given data.

    Attributes
    ----------
    log_marginal_likelihood : float
        :math:`\\log p(y \\mid X)` under the prior's hyperparameters.
    jitter : float
        Diagonal jitter the Cholesky factorisation needed (0.0 when none).
    near_duplicates : int
        Training inputs that (nearly) repeat an earlier one; with little noise they make
        the kernel matrix singular, which is where jitter comes from.
    """

    prior: GaussianProcess
    X: jax.Array
    y: jax.Array
    factor: jax.Array  # lower Cholesky factor of K + noise + jitter
    alpha: jax.Array  # (K + noise)^-1 (y - mean)
    jitter: float
    log_marginal_likelihood: float
    near_duplicates: int

    def predict(self, X_new, *, full_cov: bool = False, include_noise: bool = False):
        """Posterior mean and variance (or covariance) of the latent ``f`` at ``X_new``.

        ``include_noise=True`` adds the observation noise, for predicting new ``y``
        (a scalar ``noise_variance`` only: per-point noise is not known at new inputs).
        """
        X_new = _check_inputs(X_new, "X_new", self.X.shape[1])
        noise = self.prior.noise_variance
        if include_noise and np.ndim(noise) == 1:
            raise ValueError("include_noise needs a scalar noise_variance; this GP has one per training point")
        mean, cov = _predict(self.prior.kernel, self.X, self.factor, self.alpha, X_new, full_cov)
        mean = mean + self.prior.mean
        if include_noise:
            cov = cov + noise * (jnp.eye(X_new.shape[0]) if full_cov else 1.0)
        return np.asarray(mean), np.asarray(cov)

    def sample(self, X_new, num_samples: int, *, rng_key=0) -> np.ndarray:
        """Joint draws of the latent ``f`` at ``X_new``: shape ``(num_samples, N_new)``."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        mean, cov = self.predict(X_new, full_cov=True)
        factor = robust_cholesky(jnp.asarray(cov)).factor
        key = jax.random.PRNGKey(rng_key) if isinstance(rng_key, int) else rng_key
        eps = jax.random.normal(key, (int(num_samples), mean.shape[0]), factor.dtype)
        return np.asarray(mean + eps @ factor.T)


@jax.jit
def _condition(kernel, X, residual, noise):
    matrix = kernel(X) + jnp.diag(noise)
    factor, jitter = robust_cholesky(matrix)
    alpha = cho_solve((factor, True), residual)
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(factor)))
    log_ml = -0.5 * (residual @ alpha + log_det + residual.shape[0] * _LOG_2PI)
    return factor, alpha, jitter, log_ml


@partial(jax.jit, static_argnames="full_cov")
def _predict(kernel, X, factor, alpha, X_new, full_cov):
    cross = kernel(X, X_new)
    mean = cross.T @ alpha
    v = solve_triangular(factor, cross, lower=True)
    if full_cov:
        return mean, kernel.cross(X_new, X_new) - v.T @ v
    return mean, jnp.maximum(kernel.diag(X_new) - jnp.sum(v**2, axis=0), 0.0)


def _check_inputs(X, name, dim=None):
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{name} must be (N, D) or (N,) with N >= 1, got shape {X.shape}")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns like the training inputs, got {X.shape[1]}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf")
    return jnp.asarray(X)


def _check_training_data(X, y):
    X = _check_inputs(X, "X")
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be 1-D with one value per row of X ({X.shape[0]}), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or inf")
    return X, jnp.asarray(y)


def _count_near_duplicates(X: np.ndarray) -> int:
    """Rows within a relative distance of an earlier row."""
    scale = max(float(np.max(np.ptp(X, axis=0))), 1.0)
    rounded = np.round(X / (scale * _DUPLICATE_TOLERANCE))
    return int(X.shape[0] - len(np.unique(rounded, axis=0)))
