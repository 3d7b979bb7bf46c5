"""L-BFGS for MAP and Laplace modes, delegated to SciPy.

SciPy's L-BFGS-B runs the loop well, and the only thing compiled is the objective's
value and gradient: a compiled L-BFGS with a zoom line search inside ``lax.scan``
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


def lbfgs(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    max_iter: int = 1000,
    progress: bool = True,
    desc: str = "L-BFGS",
) -> OptimizeOutput:
    """Minimise ``fun`` from ``x0`` with L-BFGS (SciPy's L-BFGS-B, no bounds).

    The tolerances are set at rounding level so the answer is as exact as float64
    allows; ``converged`` is judged afterwards on the gradient, independently of
    why SciPy stopped.
    """
    value_and_grad = jax.jit(jax.value_and_grad(fun))
    trace = []

    def objective(x):
        value, grad = value_and_grad(x)
        return float(value), np.asarray(grad, dtype=float)

    with tqdm(total=max_iter, desc=desc, disable=not progress, delay=1.0, leave=False) as bar:

        def record(intermediate_result):
            trace.append(float(intermediate_result.fun))
            bar.update()

        found = scipy.optimize.minimize(
            objective,
            np.asarray(x0, dtype=float),
            jac=True,
            method="L-BFGS-B",
            callback=record,
            options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20},
        )
    x = jax.numpy.asarray(found.x)
    value, grad = objective(found.x)
    grad_norm = float(np.linalg.norm(grad))
    converged = bool(np.isfinite(value) and grad_norm < GTOL * max(1.0, abs(value)))
    return OptimizeOutput(x, value, grad_norm, np.asarray(trace), int(found.nit), converged)
