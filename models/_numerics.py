"""Numerical building blocks shared by every model and routine (models never import inference, so they live here)."""

import math
from numbers import Integral, Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg.lapack import dpotrf


def is_integer(value) -> bool:
    """A Python or NumPy integer, booleans excluded (``True`` is an int to Python)."""
    return not isinstance(value, bool | np.bool_) and isinstance(value, Integral)


def is_positive_number(value) -> bool:
    """A finite real number > 0, booleans excluded (``True`` is an int to Python)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value > 0


def as_real_array(name: str, value) -> np.ndarray:
    """``value`` as a float array, or a TypeError naming ``name``: complex values are refused,
    where NumPy's cast would drop the imaginary parts with only a warning, and so are
    strings, which it would parse."""
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nesting
        raise TypeError(f"{name} must be a real numeric array, got {type(value).__name__}") from error
    if array.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex values")
    # an object array (mixed Python numbers) converts only if every entry is a real number: None would become NaN
    if array.dtype.kind in "biuf" or (array.dtype.kind == "O" and all(isinstance(v, Real) for v in array.flat)):
        return array.astype(float, copy=False)
    given = f"an array of {array.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
    raise TypeError(f"{name} must be a real numeric array, got {given}")


def check_real(name: str, value) -> None:
    """Refuse a user-given hyperparameter that is not a real number or array of them (None, a
    bool, a string, a complex number), which would otherwise pass as a pytree leaf and fail, or
    mean something else (``True`` as 1), inside a computation. Tracers pass unchecked."""
    if isinstance(value, jax.core.Tracer):
        return
    if np.asarray(value).dtype.kind == "b":
        raise TypeError(f"{name} must be a real number or an array of them, got {value!r}")
    as_real_array(name, value)


class CholeskyResult(NamedTuple):
    factor: jax.Array | np.ndarray  # lower-triangular L with L L^T = matrix + jitter * I (NaN if it failed)
    jitter: jax.Array | float  # the jitter added to the diagonal; 0.0 when none was needed


def robust_cholesky(matrix, *, max_tries: int = 8, relative_jitter: float = 1e-10) -> CholeskyResult:
    """Cholesky factor of a symmetric matrix, adding diagonal jitter only if needed.

    Tries ``jitter = 0`` first, then ``relative_jitter * mean(|diag|) * 10**k`` for
    ``k = 0 .. max_tries - 1``. The jitter used is returned so callers record it; a
    factor of NaN means the matrix stayed indefinite at the largest jitter, and it is
    the caller's job to raise. Works under ``jit`` and ``vmap``.
    """
    matrix = jnp.asarray(matrix)
    n = matrix.shape[-1]
    scale = jnp.maximum(jnp.mean(jnp.abs(jnp.diag(matrix))), jnp.finfo(matrix.dtype).tiny)

    def attempt(k):
        jitter = jnp.where(k == 0, 0.0, relative_jitter * scale * 10.0 ** (k - 1))
        factor = jnp.linalg.cholesky(matrix + jitter * jnp.eye(n, dtype=matrix.dtype))
        return factor, jitter

    def failed(carry):
        k, factor, _ = carry
        return jnp.logical_and(k <= max_tries, jnp.any(jnp.isnan(factor)))

    def retry(carry):
        k, _, _ = carry
        factor, jitter = attempt(k)
        return k + 1, factor, jitter

    factor, jitter = attempt(0)
    _, factor, jitter = jax.lax.while_loop(failed, retry, (1, factor, jitter))
    return CholeskyResult(factor, jitter)


def robust_cholesky_host(matrix: np.ndarray, *, max_tries: int = 8, relative_jitter: float = 1e-10) -> CholeskyResult:
    """:func:`robust_cholesky` on the host with LAPACK's ``dpotrf``, for one-off factorisations
    outside compiled programs: the same jitter schedule, NumPy results, nothing to compile.
    Reads the lower triangle only."""
    matrix = np.asarray(matrix, dtype=float)
    scale = max(float(np.mean(np.abs(np.diagonal(matrix)))), np.finfo(float).tiny)
    for k in range(max_tries + 1):
        jitter = 0.0 if k == 0 else relative_jitter * scale * 10.0 ** (k - 1)
        shifted = matrix + jitter * np.eye(matrix.shape[0]) if jitter else matrix
        factor, info = dpotrf(shifted, lower=1, clean=1)
        # a NaN or inf entry anywhere reaches the diagonal of the rows after it
        if info == 0 and np.all(np.isfinite(np.diagonal(factor))):
            return CholeskyResult(factor, jitter)
    return CholeskyResult(np.full_like(matrix, np.nan), jitter)


def log_normalize(log_weights, axis: int = -1):
    """Normalise log weights along ``axis``: returns (log_weights - logZ, logZ)."""
    log_z = jax.scipy.special.logsumexp(log_weights, axis=axis, keepdims=True)
    return log_weights - log_z, jnp.squeeze(log_z, axis)
