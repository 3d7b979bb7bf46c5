"""L-BFGS on the host, delegated to SciPy.

SciPy's L-BFGS-B runs the loop well, and the only thing compiled is the objective's
value and gradient: a compiled L-BFGS with its line search inside ``lax.scan``
costs seconds of XLA compilation on every call, more than the optimisation itself
for the models these routines see.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
import scipy.optimize
from tqdm.auto import tqdm

GTOL = 1e-6  # on the gradient norm at the answer, relative to max(1, |f|)


class OptimizeOutput(NamedTuple):
    x: jax.Array
    value: float
    grad_norm: float
    trace: np.ndarray  # objective per iteration
    n_iter: int
    converged: bool  # gradient norm below GTOL * max(1, |f|) at x


class HostRun(NamedTuple):
    x: np.ndarray
    value: float  # at x
    trace: np.ndarray  # objective per iteration
    n_iter: int
    # SciPy's ftol or gtol test ended the run (not the iteration cap or a failed line search),
    # and no trial value since the last move was non-finite: SciPy's line search takes a
    # non-finite value as a stop, and may then report its relative-change test as met
    passed_tests: bool


def on_host(compiled: Callable) -> Callable[..., tuple[float, np.ndarray]]:
    """A compiled ``value_and_grad`` as the host objective :func:`minimize` takes."""

    def value_and_grad(*args):
        value, grad = compiled(*args)
        return float(value), np.asarray(grad, dtype=float)

    return value_and_grad


def minimize(
    value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0,
    *,
    max_iter: int,
    ftol: float,
    gtol: float,
    memory: int = 10,
    progress: bool = True,
    desc: str = "L-BFGS",
) -> HostRun:
    """Minimise with SciPy's L-BFGS-B (no bounds), given a host ``value_and_grad``.

    ``ftol`` is on the relative change of the objective per iteration, ``gtol`` on the
    largest gradient entry (SciPy's ``ftol`` and ``gtol``).
    """
    trace = []
    nonfinite_since_iterate = False
    best = (np.inf, np.asarray(x0, dtype=float))
    iterate = best[1]

    def objective(x):
        nonlocal nonfinite_since_iterate, best
        value, grad = value_and_grad(x)
        nonfinite_since_iterate |= not np.isfinite(value)
        if value < best[0]:
            best = (value, x.copy())
        return value, grad

    with tqdm(total=max_iter, desc=desc, disable=not progress, delay=1.0, leave=False) as bar:

        def record(intermediate_result):
            nonlocal nonfinite_since_iterate, iterate
            # after a failed line search SciPy may report the same point again
            if not np.array_equal(intermediate_result.x, iterate):
                nonfinite_since_iterate = False
                iterate = intermediate_result.x.copy()
            trace.append(float(intermediate_result.fun))
            bar.update()

        found = scipy.optimize.minimize(
            objective,
            np.asarray(x0, dtype=float),
            jac=True,
            method="L-BFGS-B",
            callback=record,
            options={"maxiter": max_iter, "ftol": ftol, "gtol": gtol, "maxcor": memory},
        )
    passed = found.status == 0 and np.isfinite(found.fun) and not nonfinite_since_iterate
    # SciPy returns its last iterate, which a gradient near overflow can make NaN: keep the best point seen
    value, x = (found.fun, found.x) if found.fun <= best[0] else best
    return HostRun(x, float(value), np.asarray(trace), int(found.nit), bool(passed))


def lbfgs(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    max_iter: int = 1000,
    progress: bool = True,
    desc: str = "L-BFGS",
) -> OptimizeOutput:
    """Minimise a JAX function ``fun`` from ``x0``, its value and gradient compiled.

    The tolerances are set at rounding level so the answer is as exact as float64
    allows; ``converged`` is judged afterwards on the gradient, independently of
    why SciPy stopped.
    """
    value_and_grad = on_host(jax.jit(jax.value_and_grad(fun)))
    found = minimize(
        value_and_grad, x0, max_iter=max_iter, ftol=1e-15, gtol=1e-12, memory=20, progress=progress, desc=desc
    )
    value, grad = value_and_grad(found.x)
    grad_norm = float(np.linalg.norm(grad))
    converged = bool(np.isfinite(value) and grad_norm < GTOL * max(1.0, abs(value)))
    return OptimizeOutput(jax.numpy.asarray(found.x), value, grad_norm, found.trace, found.n_iter, converged)
