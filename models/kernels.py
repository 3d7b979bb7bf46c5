"""Covariance functions for Gaussian processes.

Kernels are immutable values (frozen dataclasses registered as JAX pytrees whose
leaves are the hyperparameters), combined with ``+`` and ``*``. ``k(X1, X2)`` is the
``(N1, N2)`` covariance matrix and ``k.diag(X)`` its diagonal on ``X``; ``k(X)`` is
``k(X, X)`` (where :class:`White` adds its variance). Lengthscales are scalars or
``(D,)`` arrays (one per input dimension: automatic relevance determination).

Examples
--------
>>> import numpy as np
>>> k = RBF(lengthscale=1.0, variance=2.0) + White(variance=0.1)
>>> k(np.zeros((2, 1))).tolist()
[[2.1, 2.0], [2.0, 2.1]]
"""

import abc
import math
from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

from ._numerics import check_real
from ._pytree import is_concrete, register_dataclass

__all__ = ["Constant", "Kernel", "Linear", "Matern12", "Matern32", "Matern52", "Periodic", "RBF", "White"]


class Kernel(abc.ABC):
    """A positive semi-definite covariance function ``k(x, x')``."""

    @abc.abstractmethod
    def cross(self, x1, x2):
        """The ``(N1, N2)`` matrix ``k(x1_i, x2_j)``."""

    @abc.abstractmethod
    def diag(self, x):
        """``k(x_i, x_i)`` for each row: shape ``(N,)``."""

    def __call__(self, x1, x2=None):
        x1 = _as_inputs(x1, "x1")
        if x2 is None:
            return self.cross(x1, x1) + self._diagonal_only(x1)
        return self.cross(x1, _as_inputs(x2, "x2"))

    def _diagonal_only(self, x):
        """What ``k(X, X)`` has beyond ``cross``: only White's noise."""
        return jnp.zeros((x.shape[0], x.shape[0]), x.dtype)

    def __add__(self, other: "Kernel") -> "Kernel":
        _require_kernel(other)
        return Sum(self, other)

    def __mul__(self, other: "Kernel") -> "Kernel":
        _require_kernel(other)
        return Product(self, other)


def _require_kernel(other):
    if not isinstance(other, Kernel):
        raise TypeError(f"kernels combine with kernels only, got {type(other).__name__}; use Constant(c) for a scale")


def _as_inputs(x, name):
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D) or (N,), got shape {x.shape}")
    return x


def _check_positive(kernel, *names):
    """Hyperparameters must be positive; checked when concrete (not while traced).
    A list or tuple (an ARD lengthscale) becomes an array, so it is one pytree leaf."""
    for name in names:
        value = getattr(kernel, name)
        check_real(name, value)
        if isinstance(value, list | tuple):
            value = np.asarray(value, dtype=float)
            object.__setattr__(kernel, name, value)
        if not is_concrete(value):
            continue
        array = np.asarray(value, dtype=float)
        if array.ndim > 1 or array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
            raise ValueError(f"{name} must be a positive finite scalar or (D,) vector, got {value!r}")


def check_input_dim(kernel: Kernel, dim: int) -> None:
    """An ARD lengthscale (a vector) needs one entry per input column: otherwise it would be
    broadcast against the columns, or fail deep inside the kernel."""
    for f in fields(kernel):
        value = getattr(kernel, f.name)
        if isinstance(value, Kernel):
            check_input_dim(value, dim)
        elif (
            f.name in ("lengthscale", "period") and is_concrete(value) and np.ndim(value) == 1 and np.size(value) != dim
        ):
            raise ValueError(
                f"{type(kernel).__name__}'s {f.name} has {np.size(value)} entries, but the inputs have {dim} "
                f"column(s): give one {f.name} per column, or a scalar"
            )


def _pytree(cls):
    """Register a kernel dataclass: every field is a hyperparameter (a leaf) or a child kernel."""
    return register_dataclass(cls, [f.name for f in fields(cls)])


class _Stationary(Kernel):
    """``variance * f(r)`` of the scaled distance ``r = |(x - x') / lengthscale|``."""

    lengthscale: float
    variance: float

    def __post_init__(self):
        _check_positive(self, "lengthscale", "variance")

    @abc.abstractmethod
    def profile(self, r2):
        """``f`` as a function of the squared scaled distance."""

    def cross(self, x1, x2):
        return self.variance * self.profile(_scaled_sq_dist(x1, x2, self.lengthscale))

    def diag(self, x):
        return _constant_diag(x, self.variance) * self.profile(jnp.zeros((), x.dtype))


def _scaled_sq_dist(x1, x2, lengthscale):
    """Squared distances between the rows of x1 / l and x2 / l (N1, N2)."""
    return _sq_dist(x1 / lengthscale, x2 / lengthscale)


@jax.custom_vjp
def _sq_dist(a, b):
    """Squared distances between rows, from the differences themselves: the expansion
    |a|^2 - 2 a.b + |b|^2 leaves round-off of order |a|^2 where the distance is 0,
    which the square root in the Matérn kernels turns into large errors near the
    diagonal. The gradient has no such problem and is written out with matrix
    products: reverse mode through the (N1, N2, D) differences costs more than the
    rest of a GP's log marginal likelihood gradient together."""
    return _sq_dist_direct(a, b)


def _sq_dist_direct(a, b):
    return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def _sq_dist_fwd(a, b):
    return _sq_dist_direct(a, b), (a, b)


def _sq_dist_bwd(residuals, cotangent):
    a, b = residuals
    # d/da_i sum_j c_ij |a_i - b_j|^2 = 2 (a_i sum_j c_ij - sum_j c_ij b_j), and likewise for b;
    # a common shift of a and b changes neither, and centring keeps the products small
    shift = 0.5 * (jnp.mean(a, axis=0) + jnp.mean(b, axis=0))
    a, b = a - shift, b - shift
    grad_a = 2 * (a * jnp.sum(cotangent, axis=1)[:, None] - cotangent @ b)
    grad_b = 2 * (b * jnp.sum(cotangent, axis=0)[:, None] - cotangent.T @ a)
    return grad_a, grad_b


_sq_dist.defvjp(_sq_dist_fwd, _sq_dist_bwd)


def _constant_diag(x, value):
    """The same value on every row of x: the diagonal of a stationary kernel."""
    return jnp.full(x.shape[0], value, x.dtype)


def _safe_sqrt(r2):
    """sqrt with a finite gradient at 0 (the diagonal), where the Matérn kernels are smooth in r^2."""
    positive = r2 > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, r2, 1.0)), 0.0)


@_pytree
@dataclass(frozen=True)
class RBF(_Stationary):
    r"""Squared exponential, :math:`\sigma^2 \exp(-r^2 / 2)`."""

    lengthscale: float = 1.0
    variance: float = 1.0

    def profile(self, r2):
        return jnp.exp(-0.5 * r2)


@_pytree
@dataclass(frozen=True)
class Matern12(_Stationary):
    r"""Matérn 1/2 (exponential), :math:`\sigma^2 e^{-r}`: rough, continuous paths."""

    lengthscale: float = 1.0
    variance: float = 1.0

    def profile(self, r2):
        return jnp.exp(-_safe_sqrt(r2))


@_pytree
@dataclass(frozen=True)
class Matern32(_Stationary):
    r"""Matérn 3/2, :math:`\sigma^2 (1 + \sqrt3 r) e^{-\sqrt3 r}`: once differentiable paths."""

    lengthscale: float = 1.0
    variance: float = 1.0

    def profile(self, r2):
        s = math.sqrt(3.0) * _safe_sqrt(r2)
        return (1.0 + s) * jnp.exp(-s)


@_pytree
@dataclass(frozen=True)
class Matern52(_Stationary):
    r"""Matérn 5/2, :math:`\sigma^2 (1 + \sqrt5 r + 5 r^2 / 3) e^{-\sqrt5 r}`: twice differentiable paths."""

    lengthscale: float = 1.0
    variance: float = 1.0

    def profile(self, r2):
        s = math.sqrt(5.0) * _safe_sqrt(r2)
        return (1.0 + s + 5.0 * r2 / 3.0) * jnp.exp(-s)


@_pytree
@dataclass(frozen=True)
class Periodic(Kernel):
    r"""Periodic (MacKay 1998), :math:`\sigma^2 \exp(-2 \sum_d \sin^2(\pi (x_d - x'_d) / p_d) / \ell_d^2)`.

    A product over the input columns of one-dimensional periodic kernels, so positive
    semi-definite on inputs of any dimension; ``lengthscale`` and ``period`` are scalars
    or ``(D,)`` arrays. On one column it equals scikit-learn's ``ExpSineSquared``, which
    takes the sine of the Euclidean distance instead, and whose matrices on two or more
    columns can have negative eigenvalues (scikit-learn issue 19343).
    """

    lengthscale: float = 1.0
    period: float = 1.0
    variance: float = 1.0

    def __post_init__(self):
        _check_positive(self, "lengthscale", "period", "variance")

    def cross(self, x1, x2):
        phase = jnp.pi * (x1[:, None, :] - x2[None, :, :]) / self.period
        return self.variance * jnp.exp(-2.0 * jnp.sum((jnp.sin(phase) / self.lengthscale) ** 2, axis=-1))

    def diag(self, x):
        return _constant_diag(x, self.variance)


@_pytree
@dataclass(frozen=True)
class Linear(Kernel):
    r"""Linear (dot product), :math:`\sigma^2 x^\top x'`: Bayesian linear regression through the origin."""

    variance: float = 1.0

    def __post_init__(self):
        _check_positive(self, "variance")

    def cross(self, x1, x2):
        return self.variance * x1 @ x2.T

    def diag(self, x):
        return self.variance * jnp.sum(x**2, axis=1)


@_pytree
@dataclass(frozen=True)
class Constant(Kernel):
    r"""Constant, :math:`c`: an unknown offset, or a scale when multiplied with another kernel."""

    variance: float = 1.0

    def __post_init__(self):
        _check_positive(self, "variance")

    def cross(self, x1, x2):
        return jnp.full((x1.shape[0], x2.shape[0]), 1.0, x1.dtype) * self.variance

    def diag(self, x):
        return _constant_diag(x, self.variance)


@_pytree
@dataclass(frozen=True)
class White(Kernel):
    r"""White noise, :math:`\sigma^2 \delta_{ii'}`: on the diagonal of ``k(X)`` only; zero between
    two different sets of inputs, as in scikit-learn."""

    variance: float = 1.0

    def __post_init__(self):
        _check_positive(self, "variance")

    def cross(self, x1, x2):
        return jnp.zeros((x1.shape[0], x2.shape[0]), x1.dtype)

    def _diagonal_only(self, x):
        return self.variance * jnp.eye(x.shape[0], dtype=x.dtype)

    def diag(self, x):
        return _constant_diag(x, self.variance)


@_pytree
@dataclass(frozen=True)
class Sum(Kernel):
    """``left + right``."""

    left: Kernel
    right: Kernel

    def cross(self, x1, x2):
        return self.left.cross(x1, x2) + self.right.cross(x1, x2)

    def _diagonal_only(self, x):
        return self.left._diagonal_only(x) + self.right._diagonal_only(x)

    def diag(self, x):
        return self.left.diag(x) + self.right.diag(x)


@_pytree
@dataclass(frozen=True)
class Product(Kernel):
    """``left * right`` (elementwise: the product of two kernels is a kernel)."""

    left: Kernel
    right: Kernel

    def cross(self, x1, x2):
        return self.left.cross(x1, x2) * self.right.cross(x1, x2)

    def _diagonal_only(self, x):
        # (A + Da)(B + Db) beyond A B, with Da, Db diagonal
        left_extra, right_extra = self.left._diagonal_only(x), self.right._diagonal_only(x)
        left_cross = self.left.diag(x) - jnp.diagonal(left_extra)
        right_cross = self.right.diag(x) - jnp.diagonal(right_extra)
        return left_extra * right_cross + right_extra * left_cross + left_extra * right_extra

    def diag(self, x):
        return self.left.diag(x) * self.right.diag(x)
