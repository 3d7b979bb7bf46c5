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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.scipy.linalg import cho_solve, solve_triangular

from ._keys import as_key
from ._numerics import as_real_array, check_real, is_integer, robust_cholesky, robust_cholesky_host
from ._pytree import is_concrete, register_dataclass
from .kernels import Kernel, check_input_dim

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
    priors: dict | None = None

    def __post_init__(self):
        if not isinstance(self.kernel, Kernel):
            raise TypeError(f"kernel must be a bayeskit.models.kernels kernel, got {type(self.kernel).__name__}")
        check_real("noise_variance", self.noise_variance)
        check_real("mean", self.mean)
        if is_concrete(self.noise_variance):
            noise = np.asarray(self.noise_variance, dtype=float)
            if noise.ndim > 1 or not np.all(np.isfinite(noise)) or np.any(noise < 0):
                raise ValueError(f"noise_variance must be finite and >= 0 (a scalar or one per point), got {noise!r}")
        if is_concrete(self.mean) and (np.ndim(self.mean) != 0 or not math.isfinite(float(self.mean))):
            raise ValueError(f"mean must be a finite scalar, got {self.mean!r}")
        # a tuple of pairs, so the model stays hashable (it is a pytree's static part)
        object.__setattr__(self, "priors", _check_priors(self, self.priors))

    def hyperparameters(self) -> dict[str, np.ndarray | jax.Array]:
        """Every hyperparameter by name: ``"kernel.lengthscale"``, ``"kernel.left.variance"``
        (for a sum or product: ``left``/``right``), ``"noise_variance"``, ``"mean"``."""
        leaves, _ = jax.tree_util.tree_flatten_with_path(self)
        return {_path_name(path): value for path, value in leaves}

    def with_hyperparameters(self, values: dict) -> "GaussianProcess":
        """A copy with the named hyperparameters replaced (the others kept)."""
        current = self.hyperparameters()
        unknown = set(values) - set(current)
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}; this GP has {sorted(current)}")
        leaves = [values.get(name, value) for name, value in current.items()]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self), leaves)

    def __call__(self, X, y=None):
        """The GP as a NumPyro program: hyperparameters named in ``priors`` are sampled
        from them (the others held at their values), then ``y ~ N(mean, K + noise)``.

        So ``nuts(gp, X, y=y)`` integrates over the hyperparameters and
        ``prior_predictive(gp, X)`` draws functions.
        """
        import numpyro
        import numpyro.distributions as dist

        X = _check_inputs(X, "X")
        shapes = {name: np.shape(value) for name, value in self.hyperparameters().items()}
        # a scalar prior on a vector hyperparameter (ARD lengthscales) is one per element, as in fit_gp
        values = {name: numpyro.sample(name, prior.expand(shapes[name]).to_event()) for name, prior in self.priors}
        gp = self.with_hyperparameters(values)
        noise = jnp.broadcast_to(jnp.asarray(gp.noise_variance, X.dtype), (X.shape[0],))
        covariance = gp.kernel(X) + jnp.diag(noise)
        loc = jnp.broadcast_to(jnp.asarray(gp.mean, X.dtype), (X.shape[0],))
        return numpyro.sample("y", dist.MultivariateNormal(loc, covariance), obs=None if y is None else jnp.asarray(y))

    def condition(self, X, y, *, inducing_points=None) -> "ConditionedGP":
        """The posterior given observations ``y`` at inputs ``X``.

        Exact (:math:`O(N^3)`) unless ``inducing_points`` ``Z`` (``(M, D)``) are given: then the sparse
        variational approximation of Titsias (2009), a ``SparseConditionedGP`` with the same interface in
        :math:`O(N M^2)` time and :math:`O(N M)` memory, whose ``log_marginal_likelihood`` is a lower
        bound on the exact one; it needs one scalar ``noise_variance > 0`` (see ``_sparse_gp``).
        """
        if inducing_points is not None:
            from ._sparse_gp import _condition_sparse  # here, not at the top: _sparse_gp imports this module

            return _condition_sparse(self, X, y, inducing_points)
        X, y = _check_training_data(X, y)
        check_input_dim(self.kernel, X.shape[1])
        if np.ndim(self.noise_variance) == 1 and np.shape(self.noise_variance)[0] != y.shape[0]:
            raise ValueError(
                f"noise_variance has {np.shape(self.noise_variance)[0]} values but there are {y.shape[0]} points"
            )
        fit = factorise_on_host(*_covariance_and_residual(self.kernel, X, y, self.mean, self.noise_variance))
        if not np.isfinite(fit.log_density):
            raise ValueError(
                "the kernel matrix plus noise is not positive definite even with jitter "
                f"{fit.jitter:.3g} on its diagonal; check the kernel's hyperparameters"
            )
        return ConditionedGP(
            prior=self,
            X=X,
            y=y,
            factor=fit.factor,
            alpha=fit.alpha,
            jitter=fit.jitter,
            log_marginal_likelihood=fit.log_density,
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
    factor: np.ndarray  # lower Cholesky factor of K + noise + jitter
    alpha: np.ndarray  # (K + noise)^-1 (y - mean)
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

    def loo_residuals(self) -> np.ndarray:
        r"""Standardised leave-one-out residuals of the observations, in closed form
        (Rasmussen & Williams 2006, eq. 5.12): :math:`r_i = [K^{-1}y]_i / \sqrt{[K^{-1}]_{ii}}`,
        which is :math:`(y_i - \mu_{-i}) / \sigma_{-i}`. Under the model they are N(0, 1)."""
        # on the host with LAPACK's triangular inverse (N^3 / 3 flops): a one-off, where a
        # compiled program would cost more to compile than to run
        inverse_factor, info = scipy.linalg.lapack.dtrtri(np.asarray(self.factor, float), lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"the Cholesky factor is singular (LAPACK dtrtri info={info})")
        return np.asarray(self.alpha) / np.sqrt(np.sum(inverse_factor**2, axis=0))

    def sample(self, X_new, num_samples: int, *, rng_key=0) -> np.ndarray:
        """Joint draws of the latent ``f`` at ``X_new``: shape ``(num_samples, N_new)``."""
        if not is_integer(num_samples) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        mean, cov = self.predict(X_new, full_cov=True)
        factor = robust_cholesky(jnp.asarray(cov)).factor
        key = as_key(rng_key)
        eps = jax.random.normal(key, (int(num_samples), mean.shape[0]), factor.dtype)
        return np.asarray(mean + eps @ factor.T)


@jax.jit
def _covariance_and_residual(kernel, X, y, mean, noise_variance):
    return covariance_and_residual(GaussianProcess(kernel, noise_variance, mean), X, y)


class Factorisation(NamedTuple):
    factor: np.ndarray  # lower Cholesky factor of the covariance + jitter * I (NaN if it failed)
    alpha: np.ndarray  # covariance^-1 residual
    jitter: float
    log_density: float  # log N(residual | 0, covariance); -inf if the factorisation failed


def factorise_on_host(covariance, residual) -> Factorisation:
    """The Gaussian log density of ``residual`` and the factors behind it, by LAPACK on the host.

    One-off factorisations (``condition``, each evaluation of ``fit_gp``) run here rather
    than in a compiled program: nothing to compile, and LAPACK's ``dpotri`` then gives the
    inverse the gradient needs in a third of the flops of the triangular solves XLA has.
    """
    residual = np.asarray(residual, dtype=float)
    factor, jitter = robust_cholesky_host(covariance)
    if not np.all(np.isfinite(np.diagonal(factor))):
        return Factorisation(factor, np.full_like(residual, np.nan), jitter, -math.inf)
    alpha, _ = scipy.linalg.lapack.dpotrs(factor, residual, lower=1)
    log_det = 2 * np.sum(np.log(np.diagonal(factor)))
    log_density = -0.5 * (residual @ alpha + log_det + residual.shape[0] * _LOG_2PI)
    return Factorisation(factor, alpha, jitter, float(log_density))


def inverse_on_host(factor: np.ndarray) -> np.ndarray:
    """``(L L^T)^-1`` from the lower Cholesky factor ``L``, by LAPACK's ``dpotri``; only the
    lower triangle is filled (see :func:`covariance_cotangent`)."""
    inverse, info = scipy.linalg.lapack.dpotri(factor, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the Cholesky factor is singular (LAPACK dpotri info={info})")
    return inverse


def covariance_cotangent(alpha, inverse):
    """The derivative of ``log N(r | 0, K)`` with respect to ``K``, ``(alpha alpha^T - K^-1) / 2``
    with ``alpha = K^-1 r``, given ``K^-1`` whole or its lower triangle only."""
    lower = jnp.tril(jnp.ones(inverse.shape, bool))
    return 0.5 * (jnp.outer(alpha, alpha) - jnp.where(lower, inverse, inverse.T))


def covariance_and_residual(gp: GaussianProcess, X, y):
    """``K + noise`` and ``y - mean``."""
    noise = jnp.broadcast_to(jnp.asarray(gp.noise_variance, X.dtype), y.shape)
    return gp.kernel(X) + jnp.diag(noise), y - gp.mean


def log_marginal_likelihood(gp: GaussianProcess, X, y, mask=None):
    """``log p(y | X)`` as a differentiable function of the GP's hyperparameters (a pytree).

    ``mask`` (N,) marks real rows; padded rows are cut out of the covariance (replaced
    by identity rows) so data of a growing size can share one compiled shape.
    """
    mask = jnp.ones(y.shape[0], bool) if mask is None else mask
    covariance, residual = masked_covariance_and_residual(gp, X, y, mask)
    return _gaussian_log_density(covariance, residual) - 0.5 * jnp.sum(mask) * _LOG_2PI


def masked_covariance_and_residual(gp: GaussianProcess, X, y, mask):
    """``K + noise`` and ``y - mean`` with padded rows (``mask`` False) cut out: their
    rows and columns of the covariance are the identity's and their residuals zero,
    so they neither constrain nor are constrained by the real rows."""
    covariance, residual = covariance_and_residual(gp, X, y)
    both = mask[:, None] & mask[None, :]
    return jnp.where(both, covariance, jnp.eye(y.shape[0], dtype=X.dtype)), jnp.where(mask, residual, 0.0)


@jax.custom_vjp
def _gaussian_log_density(covariance, residual):
    """``log N(residual | 0, covariance)`` without the ``2 pi`` term, factorised by the robust Cholesky."""
    return _gaussian_log_density_fwd(covariance, residual)[0]


# jaxlib 0.10's batched LAPACK kernels (what vmap makes of a Cholesky) can deadlock
# XLA:CPU's thread pool when several run at once; under vmap (restarts, BO) these
# factorisations therefore run one matrix at a time.
@jax.custom_batching.sequential_vmap
def _factorise(covariance, residual):
    factor, _ = robust_cholesky(covariance)
    return factor, cho_solve((factor, True), residual)


@jax.custom_batching.sequential_vmap
def _inverse(factor):
    return cho_solve((factor, True), jnp.eye(factor.shape[0], dtype=factor.dtype))


def _gaussian_log_density_fwd(covariance, residual):
    factor, alpha = _factorise(covariance, residual)
    value = -0.5 * residual @ alpha - jnp.sum(jnp.log(jnp.diagonal(factor)))
    return value, (factor, alpha)


def _gaussian_log_density_bwd(saved, g):
    # written out (one inverse) instead of differentiating through the factorisation and its jitter loop
    factor, alpha = saved
    return g * covariance_cotangent(alpha, _inverse(factor)), -g * alpha


_gaussian_log_density.defvjp(_gaussian_log_density_fwd, _gaussian_log_density_bwd)


@partial(jax.jit, static_argnames="full_cov")
def _predict(kernel, X, factor, alpha, X_new, full_cov):
    cross = kernel(X, X_new)
    mean = cross.T @ alpha
    v = solve_triangular(factor, cross, lower=True)
    if full_cov:
        return mean, kernel(X_new) - v.T @ v  # with White's diagonal, as diag() has it
    return mean, jnp.maximum(kernel.diag(X_new) - jnp.sum(v**2, axis=0), 0.0)


register_dataclass(GaussianProcess, ["kernel", "noise_variance", "mean"], ["priors"])


def _path_name(path) -> str:
    return ".".join(str(getattr(entry, "name", getattr(entry, "key", entry))) for entry in path)


def _check_priors(gp: GaussianProcess, priors) -> tuple:
    """Priors as sorted ``(name, distribution)`` pairs, each naming a hyperparameter."""
    if priors is None:
        return ()
    items = tuple(priors.items()) if isinstance(priors, dict) else tuple(priors)
    shapes = {_path_name(path): np.shape(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(gp)[0]}
    for name, prior in items:
        if name not in shapes:
            raise ValueError(f"priors names {name!r}, which is not a hyperparameter; this GP has {sorted(shapes)}")
        if not hasattr(prior, "log_prob") or not hasattr(prior, "support"):
            raise TypeError(f"priors[{name!r}] must be a numpyro distribution, got {type(prior).__name__}")
        if prior.event_shape or not _broadcasts_to(prior.batch_shape, shapes[name]):
            raise ValueError(
                f"priors[{name!r}] has batch shape {prior.batch_shape} and event shape {prior.event_shape}; "
                f"it must be univariate with a batch shape that broadcasts to the hyperparameter's {shapes[name]}"
            )
    return tuple(sorted(items, key=lambda item: item[0]))


def _broadcasts_to(shape, target) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def _check_inputs(X, name, dim=None):
    X = as_real_array(name, X)
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
    y = as_real_array("y", y)
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
