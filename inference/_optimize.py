"""L-BFGS on a flat vector, as an ``(init, step)`` pair run by the shared driver."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

from . import _driver


def lbfgs(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    max_iter: int = 1000,
    gtol: float = 1e-8,
    progress: bool = True,
    desc: str = "L-BFGS",
) -> tuple[jax.Array, _driver.RunOutput]:
    """Minimise ``fun`` from ``x0`` with optax's L-BFGS (zoom line search).

    Converged when the gradient norm falls below ``gtol * max(1, |f|)``, a test that
    does not depend on how the objective is scaled by the number of data points.
    """
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def init(x):
        return x, solver.init(x)

    def step(state):
        x, opt_state = state
        value, grad = value_and_grad(x, state=opt_state)
        updates, opt_state = solver.update(grad, opt_state, x, value=value, grad=grad, value_fn=fun)
        info = {
            "loss": value,
            "scaled_grad_norm": otu.tree_norm(grad) / jnp.maximum(1.0, jnp.abs(value)),
        }
        return (optax.apply_updates(x, updates), opt_state), info

    out = _driver.run(
        step,
        init(x0),
        max_iter=max_iter,
        objective="loss",
        monitor=_driver.below("scaled_grad_norm", gtol),
        progress=progress,
        desc=desc,
    )
    return out.state[0], out
