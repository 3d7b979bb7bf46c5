r"""Sparse Gaussian-process regression with inducing points: the collapsed variational bound (VFE / SGPR).

``GaussianProcess(kernel, noise_variance, mean).condition(X, y, inducing_points=Z)`` returns a
:class:`SparseConditionedGP`, with the interface of the exact
:class:`~bayeskit.models._gp.ConditionedGP`, in :math:`O(N M^2)` time and :math:`O(N M)` memory for
``M`` inducing inputs ``Z``: no ``N x N`` matrix is ever formed. :func:`sparse_log_marginal_likelihood`
is the bound as a pure, jit-able and differentiable function of the hyperparameters, for fitting them
(and ``Z``) by optimisation.

The maths (Titsias 2009). With :math:`r = y - m`, :math:`K_{mm} = k(Z, Z)`, :math:`K_{mn} = k(Z, X)`
and :math:`Q_{nn} = K_{nm} K_{mm}^{-1} K_{mn}` (the Nyström approximation of :math:`K_{nn}`), the
log marginal likelihood :math:`\log p(y)` is bounded below by

.. math::

    F(Z) = \log N(y \mid m, Q_{nn} + \sigma^2 I) - \frac{1}{2\sigma^2} \operatorname{tr}(K_{nn} - Q_{nn}),

which is tight when ``Z = X`` and rises (weakly) as inducing points are added. It is computed with
:math:`L L^\top = K_{mm}` (plus recorded jitter), :math:`A = L^{-1} K_{mn} / \sigma` (``M x N``),
:math:`L_B L_B^\top = B = I + A A^\top` (``M x M``, eigenvalues >= 1, so well conditioned) and
:math:`c = L_B^{-1} A r / \sigma`, using

* the determinant lemma: :math:`\log|Q_{nn} + \sigma^2 I| = N \log\sigma^2 + 2 \sum_i \log (L_B)_{ii}`,
* Woodbury: :math:`r^\top (Q_{nn} + \sigma^2 I)^{-1} r = r^\top r / \sigma^2 - c^\top c`,
* :math:`\operatorname{tr}(Q_{nn}) = \sigma^2 \sum_{ij} A_{ij}^2`.

The optimal :math:`q(u) = N(K_{mm} \Sigma K_{mn} r / \sigma^2, K_{mm} \Sigma K_{mm})`, with
:math:`\Sigma = (K_{mm} + K_{mn} K_{nm} / \sigma^2)^{-1} = L^{-\top} L_B^{-\top} L_B^{-1} L^{-1}`,
predicts the latent ``f`` at new inputs with, for :math:`V = L^{-1} K_{m*}` and :math:`W = L_B^{-1} V`,

.. math::

    \mu_* = m + W^\top c, \qquad \Sigma_* = K_{**} - V^\top V + W^\top W.

A :class:`~bayeskit.models.kernels.White` term in the kernel is independent noise at every input, which
the inducing variables cannot explain: the bound then pays for it in the trace term and stays below
the exact log marginal likelihood even at ``Z = X``. Put observation noise in ``noise_variance``.

References
----------
M. K. Titsias, "Variational learning of inducing variables in sparse Gaussian processes", AISTATS 2009.
A. G. de G. Matthews et al., "GPflow: a Gaussian process library using TensorFlow", JMLR 2017 (SGPR).
"""

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from ._gp import _LOG_2PI, GaussianProcess, _check_inputs, _check_training_data, _count_near_duplicates
from ._keys import as_key
from ._numerics import is_integer, robust_cholesky
from .kernels import Kernel, check_input_dim

__all__ = ["SparseConditionedGP", "sparse_log_marginal_likelihood"]


def sparse_log_marginal_likelihood(kernel: Kernel, noise_variance, mean, X, y, Z) -> jax.Array:
    r"""Titsias' collapsed lower bound on :math:`\log p(y \mid X)` with inducing inputs ``Z``.

    .. math::

        F = \log N(y \mid m, Q_{nn} + \sigma^2 I) - \frac{1}{2\sigma^2} \operatorname{tr}(K_{nn} - Q_{nn}),
        \qquad Q_{nn} = K_{nm} K_{mm}^{-1} K_{mn},

    in :math:`O(N M^2)` time and :math:`O(N M)` memory (see the module docstring for the algebra).

    A pure function: it can be wrapped in ``jax.jit`` and differentiated by ``jax.grad`` with respect
    to the kernel (a pytree of hyperparameters), ``noise_variance``, ``mean``, and ``Z`` too. Shapes
    are always checked; values (finite inputs, ``noise_variance > 0``) only when they are concrete,
    not while traced. Returns NaN if :math:`K_{mm}` stays indefinite at the largest jitter.

    Parameters
    ----------
    kernel : Kernel
        The covariance function.
    noise_variance : float
        One Gaussian observation-noise variance :math:`\sigma^2 > 0` (per-point noise is not supported).
    mean : float
        Constant prior mean :math:`m`.
    X : array (N, D) or (N,)
        Training inputs.
    y : array (N,)
        Training targets.
    Z : array (M, D) or (M,)
        Inducing inputs, ``M >= 1``.

    Returns
    -------
    jax.Array
        The bound, a scalar (``<=`` the exact log marginal likelihood; equal when ``Z = X``).

    References
    ----------
    M. K. Titsias, "Variational learning of inducing variables in sparse Gaussian processes", AISTATS 2009.
    """
    X, y, Z = _validated(X, y, Z, "Z")
    noise = _validated_noise(noise_variance, X.dtype)
    if _is_concrete(mean) and not np.isfinite(np.asarray(mean, dtype=float)).all():
        raise ValueError(f"mean must be finite, got {mean!r}")
    return _factorise(kernel, X, y - mean, Z, noise).log_ml


@dataclass(frozen=True)
class SparseConditionedGP:
    """The sparse variational posterior of a :class:`GaussianProcess` given data (Titsias 2009).

    Made by ``GaussianProcess.condition(X, y, inducing_points=Z)``; it predicts with the optimal
    variational distribution of the inducing variables :math:`u = f(Z)`, and its interface is that
    of :class:`~bayeskit.models._gp.ConditionedGP`.

    Attributes
    ----------
    log_marginal_likelihood : float
        Titsias' collapsed bound, a lower bound on :math:`\\log p(y \\mid X)` (equal when ``Z = X``).
    jitter : float
        Diagonal jitter the Cholesky factorisation of ``K(Z, Z)`` needed (0.0 when none).
    near_duplicates : int
        Inducing points that (nearly) repeat an earlier one: they make ``K(Z, Z)`` singular, which is
        where jitter comes from here (training inputs never do, since ``noise_variance > 0``).
    inducing_points : jax.Array (M, D)
        The inducing inputs ``Z``.
    """

    prior: GaussianProcess
    X: jax.Array
    y: jax.Array
    inducing_points: jax.Array
    factor: jax.Array  # L: lower Cholesky factor of K(Z, Z) + jitter
    inner_factor: jax.Array  # L_B: lower Cholesky factor of B = I + A A^T
    projected: jax.Array  # c = L_B^-1 A (y - mean) / sigma
    jitter: float
    log_marginal_likelihood: float
    near_duplicates: int

    def predict(self, X_new, *, full_cov: bool = False, include_noise: bool = False):
        """Mean and variance (or covariance) of the latent ``f`` at ``X_new`` under the optimal ``q(u)``.

        ``include_noise=True`` adds the observation noise, for predicting new ``y``.
        """
        X_new = _check_inputs(X_new, "X_new", self.X.shape[1])
        mean, cov = _predict(
            self.prior.kernel, self.inducing_points, self.factor, self.inner_factor, self.projected, X_new, full_cov
        )
        mean = mean + self.prior.mean
        if include_noise:
            cov = cov + self.prior.noise_variance * (jnp.eye(X_new.shape[0]) if full_cov else 1.0)
        return np.asarray(mean), np.asarray(cov)

    def sample(self, X_new, num_samples: int, *, rng_key=0) -> np.ndarray:
        """Joint draws of the latent ``f`` at ``X_new``: shape ``(num_samples, N_new)``."""
        if not is_integer(num_samples) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        mean, cov = self.predict(X_new, full_cov=True)
        factor = robust_cholesky(jnp.asarray(cov)).factor
        if not np.all(np.isfinite(np.asarray(factor))):
            raise ValueError("the predictive covariance is not positive semi-definite even with jitter")
        key = as_key(rng_key)
        eps = jax.random.normal(key, (int(num_samples), mean.shape[0]), factor.dtype)
        return np.asarray(mean + eps @ factor.T)


def _condition_sparse(prior: GaussianProcess, X, y, inducing_points) -> SparseConditionedGP:
    """``prior.condition(X, y, inducing_points=Z)``: validate, factorise once, and keep the ``O(M^2)`` factors."""
    X, y, Z = _validated(X, y, inducing_points, "inducing_points")
    check_input_dim(prior.kernel, X.shape[1])
    noise = _validated_noise(prior.noise_variance, X.dtype)
    factors = _factorise(prior.kernel, X, y - prior.mean, Z, noise)
    if not np.all(np.isfinite(np.asarray(factors.factor))):
        raise ValueError(
            "the inducing-point kernel matrix K(Z, Z) is not positive definite even with jitter "
            f"{float(factors.jitter):.3g} on its diagonal; check the kernel's hyperparameters and "
            "remove duplicate inducing_points"
        )
    return SparseConditionedGP(
        prior=prior,
        X=X,
        y=y,
        inducing_points=Z,
        factor=factors.factor,
        inner_factor=factors.inner_factor,
        projected=factors.projected,
        jitter=float(factors.jitter),
        log_marginal_likelihood=float(factors.log_ml),
        near_duplicates=_count_near_duplicates(np.asarray(Z)),
    )


def _is_concrete(*values) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(values))


def _validated(X, y, Z, z_name):
    """Full checks (shared with the exact GP) on concrete data; shape checks only when traced."""
    if _is_concrete(X, y, Z):
        X, y = _check_training_data(X, y)
        return X, y, _check_inputs(Z, z_name, X.shape[1])
    X, y, Z = jnp.asarray(X), jnp.asarray(y), jnp.asarray(Z)
    X = X[:, None] if X.ndim == 1 else X
    Z = Z[:, None] if Z.ndim == 1 else Z
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(f"X must be (N, D) and y (N,), got shapes {X.shape} and {y.shape}")
    if Z.ndim != 2 or Z.shape[0] == 0 or Z.shape[1] != X.shape[1]:
        raise ValueError(f"{z_name} must be (M, {X.shape[1]}) with M >= 1 like the training inputs, got {Z.shape}")
    return X, y, Z


def _validated_noise(noise_variance, dtype):
    if np.ndim(noise_variance) != 0:
        raise ValueError(
            "noise_variance must be a scalar for the sparse (inducing-point) GP: per-point noise is not "
            f"supported, got shape {np.shape(noise_variance)}"
        )
    if _is_concrete(noise_variance):
        value = float(noise_variance)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(
                f"noise_variance must be finite and > 0 for the sparse (inducing-point) GP, got {value!r}: "
                "its bound divides by it"
            )
    return jnp.asarray(noise_variance, dtype)


class _Factors(NamedTuple):
    factor: jax.Array
    inner_factor: jax.Array
    projected: jax.Array
    jitter: jax.Array
    log_ml: jax.Array


@jax.jit
def _factorise(kernel, X, residual, Z, noise) -> _Factors:
    num_inducing, n = Z.shape[0], X.shape[0]
    k_mm = kernel(Z)
    # robust_cholesky's retry loop is a lax.while_loop, which reverse-mode AD cannot go through: choose
    # the (piecewise constant) jitter on a constant copy, then factorise differentiably with it
    jitter = robust_cholesky(jax.lax.stop_gradient(k_mm)).jitter
    factor = jnp.linalg.cholesky(k_mm + jitter * jnp.eye(num_inducing, dtype=k_mm.dtype))
    sigma = jnp.sqrt(noise)
    # L^-1 K_mn as a product with the (M, M) inverse factor: XLA:CPU's triangular solve, and
    # above all its transpose in the gradient, is many times slower than a matrix product for N >> M
    inverse_factor = solve_triangular(factor, jnp.eye(num_inducing, dtype=factor.dtype), lower=True)
    a = inverse_factor @ kernel(Z, X) / sigma  # (M, N): the only O(N M) array
    inner = jnp.eye(num_inducing, dtype=a.dtype) + a @ a.T
    inner_factor = jnp.linalg.cholesky(inner)  # B's eigenvalues are >= 1: no jitter needed
    projected = solve_triangular(inner_factor, a @ residual, lower=True) / sigma
    log_det = n * jnp.log(noise) + 2 * jnp.sum(jnp.log(jnp.diagonal(inner_factor)))
    quadratic = residual @ residual / noise - projected @ projected
    trace = jnp.sum(kernel.diag(X)) / noise - jnp.sum(a**2)  # tr(K_nn - Q_nn) / sigma^2
    log_ml = -0.5 * (quadratic + log_det + n * _LOG_2PI + trace)
    return _Factors(factor, inner_factor, projected, jitter, log_ml)


@partial(jax.jit, static_argnames="full_cov")
def _predict(kernel, Z, factor, inner_factor, projected, X_new, full_cov):
    v = solve_triangular(factor, kernel(Z, X_new), lower=True)
    w = solve_triangular(inner_factor, v, lower=True)
    mean = w.T @ projected
    if full_cov:
        # kernel(X_new) (not .cross) so a White term's variance is on the diagonal, as in kernel.diag below
        return mean, kernel(X_new) - v.T @ v + w.T @ w
    return mean, jnp.maximum(kernel.diag(X_new) - jnp.sum(v**2, axis=0) + jnp.sum(w**2, axis=0), 0.0)
