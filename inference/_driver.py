"""The one driver for JAX algorithms written as a pure ``(init, step)`` pair.

A routine builds its initial state with its own ``init`` and hands ``step`` to
:func:`run`; ``step(state) -> (state, info)`` is pure and ``info`` is a dict of
scalars (one of them the objective). The driver owns everything around it:
compiling chunks of steps with ``lax.scan``, the convergence monitor, stopping at
a non-finite objective, the progress bar and the per-iteration trace. With
``num_chains`` the state carries a leading chain axis, the step is vmapped, and
each chain is frozen as soon as it converges while the others go on.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

Info = dict[str, jax.Array]


class Monitor(NamedTuple):
    """A convergence test carried inside the compiled loop.

    ``init()`` returns the monitor's state; ``update(state, info)`` returns the new
    state and a boolean scalar, True once the run has converged.
    """

    init: Callable[[], Any]
    update: Callable[[Any, Info], tuple[Any, jax.Array]]


def absolute_change(key: str, tol: float) -> Monitor:
    """Converged when ``|info[key]_t - info[key]_{t-1}| < tol`` (scikit-learn's EM rule)."""

    def update(previous, info):
        value = info[key]
        return value, jnp.abs(value - previous) < tol

    return Monitor(lambda: jnp.asarray(jnp.inf), update)


class RunOutput(NamedTuple):
    state: Any
    trace: dict[str, np.ndarray]  # (iteration,) or (chain, iteration); NaN after a chain stopped
    n_iter: np.ndarray  # steps taken, () or (chain,)
    converged: np.ndarray  # the monitor fired, () or (chain,)
    failed: np.ndarray  # stopped at a non-finite objective, () or (chain,)


def run(
    step: Callable[[Any], tuple[Any, Info]],
    state,
    *,
    max_iter: int,
    objective: str,
    monitor: Monitor | None = None,
    num_chains: int | None = None,
    chunk_size: int = 100,
    progress: bool = True,
    desc: str = "",
) -> RunOutput:
    """Run ``step`` up to ``max_iter`` times (per chain), stopping chains that converge.

    A chain whose ``info[objective]`` turns non-finite is stopped at its last finite
    state and flagged in ``failed``; the caller decides whether that is an error.
    """
    chunk_size = max(1, min(chunk_size, max_iter))
    batched = num_chains is not None
    shape = (num_chains,) if batched else ()
    monitor = monitor or Monitor(lambda: jnp.asarray(0.0), lambda s, info: (s, jnp.asarray(False)))

    def one_step(carry):
        state, mstate, done, failed, n = carry
        active = ~done & (n < max_iter)

        def advance(_):
            new_state, info = step(state)
            new_mstate, converged = monitor.update(mstate, info)
            bad = ~jnp.isfinite(info[objective])
            keep = jax.tree.map(lambda new, old: jnp.where(bad, old, new), new_state, state)
            return keep, new_mstate, converged & ~bad, bad, info

        def skip(_):
            info = jax.eval_shape(lambda s: step(s)[1], state)
            nan_info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info)  # masked below
            return state, mstate, done, jnp.asarray(False), nan_info

        state, mstate, converged, bad, info = jax.lax.cond(active, advance, skip, None)
        info = jax.tree.map(lambda v: jnp.where(active, v, jnp.nan), info)
        return (state, mstate, done | converged | bad, failed | (active & bad), n + active), info

    body = jax.vmap(one_step) if batched else one_step

    @jax.jit
    def run_chunk(carry):
        return jax.lax.scan(lambda c, _: body(c), carry, None, length=chunk_size)

    mstate = monitor.init()
    if batched:
        mstate = jax.tree.map(lambda x: jnp.broadcast_to(x, shape + jnp.shape(x)), mstate)
    carry = (state, mstate, jnp.zeros(shape, bool), jnp.zeros(shape, bool), jnp.zeros(shape, int))
    chunks = []
    with tqdm(total=max_iter, desc=desc, disable=not progress, delay=1.0, leave=False) as bar:
        while True:
            before = int(np.max(carry[4]))
            carry, info = run_chunk(carry)
            chunks.append(jax.device_get(info))
            n_iter, done = np.asarray(carry[4]), np.asarray(carry[2])
            bar.update(int(n_iter.max()) - before)
            if np.all(done | (n_iter >= max_iter)):
                break
    state, _, done, failed, n_iter = jax.device_get(carry)
    length = int(np.max(n_iter))
    trace = {}
    for key in chunks[0]:
        values = np.concatenate([chunk[key] for chunk in chunks])[:length]
        trace[key] = values.T if batched else values
    converged = np.asarray(done) & ~np.asarray(failed)
    return RunOutput(state, trace, np.asarray(n_iter), converged, np.asarray(failed))
