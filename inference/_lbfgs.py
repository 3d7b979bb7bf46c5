"""L-BFGS as an ``(init, step)`` pair for the shared driver, vmappable over restarts.

Two-loop recursion over the last ``memory`` curvature pairs (Nocedal & Wright 2006,
alg. 7.4) and a backtracking line search on the Armijo condition. Every loop is
guarded by the run's own ``done`` flag, so a finished restart never lengthens a
line search that runs beside it under ``vmap``. ``init`` only records the starting point:
the first step evaluates the loss there, so the loss and its gradient are compiled
once, inside the loop, rather than a second time for the start.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class LBFGSState(NamedTuple):
    z: jax.Array  # (p,) current point
    value: jax.Array  # f(z); inf until the first step has evaluated it
    grad: jax.Array  # (p,) gradient at z
    s: jax.Array  # (memory, p) steps, newest last
    y: jax.Array  # (memory, p) gradient changes
    done: jax.Array  # stopped: converged, or the line search found no decrease
    converged: jax.Array  # a convergence test passed (a stall counts only where the loss is flat)


@dataclass(frozen=True)
class LBFGS:
    """Minimise ``loss(z, data)`` over ``z`` (p,).

    Converged when the largest gradient entry is below ``gtol``, or the loss changed by
    less than ``ftol`` relative to its size (SciPy's L-BFGS-B rules). A run also stops
    when the line search finds no decrease in ``max_backtracks`` halvings; that counts
    as converged only if the loss is flat to round-off along the search direction.
    The driver's monitor is ``info["done"]``; ``state.converged`` says why it stopped.
    ``loss`` should be a value-like object (a frozen dataclass, a module-level
    function) so the driver can reuse the compiled loop.
    """

    loss: Callable[[jax.Array, Any], jax.Array]
    memory: int = 10
    gtol: float = 1e-5
    ftol: float = 1e-9
    max_backtracks: int = 15
    armijo: float = 1e-4

    def init(self, z, data) -> LBFGSState:
        del data  # the loss is first evaluated by the first step
        # NumPy constants: on the host, nothing is compiled for them
        empty = np.zeros((self.memory, z.shape[0]), z.dtype)
        no = np.asarray(False)
        return LBFGSState(z, np.asarray(np.inf, z.dtype), np.zeros(z.shape, z.dtype), empty, empty, no, no)

    def __call__(self, state: LBFGSState, data):
        # unevaluated (the first step): the gradient is zero, so the direction is too and
        # the "line search" evaluates the loss at z once, accepting any finite value
        unevaluated = jnp.isinf(state.value)
        max_tries = jnp.where(unevaluated, 1, self.max_backtracks)
        direction = self._direction(state)
        slope = state.grad @ direction
        direction, slope = jax.lax.cond(
            slope < 0, lambda: (direction, slope), lambda: (-state.grad, -state.grad @ state.grad)
        )
        # the first step has no curvature yet: a step of unit length
        first = jnp.all(state.s == 0)
        step = jnp.where(first, 1.0 / jnp.maximum(jnp.linalg.norm(direction), 1.0), 1.0)

        def not_accepted(carry):
            tries, step, value, _ = carry
            sufficient = value <= state.value + self.armijo * step * slope
            return ~state.done & (tries < max_tries) & ~(jnp.isfinite(value) & sufficient)

        def backtrack(carry):
            tries, step, _, _ = carry
            step = jnp.where(tries == 0, step, 0.5 * step)
            value, grad = jax.value_and_grad(self.loss)(state.z + step * direction, data)
            return tries + 1, step, value, grad

        tries, step, value, grad = jax.lax.while_loop(
            not_accepted, backtrack, (0, step, jnp.asarray(jnp.inf, state.value.dtype), state.grad)
        )
        found = jnp.isfinite(value) & (value <= state.value + self.armijo * step * slope)
        moved = found & ~state.done
        s, y = step * direction, grad - state.grad
        curvature = (s @ y) > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y)
        push = moved & curvature
        new = LBFGSState(
            z=jnp.where(moved, state.z + s, state.z),
            value=jnp.where(moved, value, state.value),
            grad=jnp.where(moved, grad, state.grad),
            s=jnp.where(push, jnp.roll(state.s, -1, axis=0).at[-1].set(s), state.s),
            y=jnp.where(push, jnp.roll(state.y, -1, axis=0).at[-1].set(y), state.y),
            done=state.done,
            converged=state.converged,
        )
        small_change = jnp.abs(state.value - new.value) <= self.ftol * jnp.maximum(1.0, jnp.abs(new.value))
        # a failed line search is convergence only where a full step along the direction would
        # change the loss by less than ftol relative (the loss is flat to round-off); elsewhere,
        # as for values near overflow, the run stops without having converged
        flat = ~unevaluated & (jnp.abs(slope) <= self.ftol * jnp.maximum(1.0, jnp.abs(state.value)))
        small_grad = jnp.isfinite(new.value) & (jnp.max(jnp.abs(new.grad)) < self.gtol)
        converged = state.converged | (~state.done & (small_grad | (moved & small_change) | (~found & flat)))
        done = state.done | converged | ~found
        new = new._replace(done=done, converged=converged)
        return new, {"loss": new.value, "done": done, "line_search_steps": tries}

    def _direction(self, state: LBFGSState):
        """``-H g`` by the two-loop recursion; unused memory slots are zero and drop out."""
        sy = jnp.sum(state.s * state.y, axis=1)
        rho = jnp.where(sy > 0, 1.0 / jnp.where(sy > 0, sy, 1.0), 0.0)

        def backward(q, pair):
            s, y, r = pair
            a = r * (s @ q)
            return q - a * y, a

        q, alphas = jax.lax.scan(backward, state.grad, (state.s, state.y, rho), reverse=True)
        yy = state.y[-1] @ state.y[-1]
        gamma = jnp.where(yy > 0, sy[-1] / jnp.where(yy > 0, yy, 1.0), 1.0)

        def forward(r_vec, pair):
            s, y, r, a = pair
            b = r * (y @ r_vec)
            return r_vec + s * (a - b), None

        r_vec, _ = jax.lax.scan(forward, gamma * q, (state.s, state.y, rho, alphas))
        return -r_vec
