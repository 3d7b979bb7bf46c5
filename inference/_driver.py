"""The two drivers for algorithms written as a pure ``(init, step)`` pair.

:func:`run` is the JAX driver. A routine builds its initial state with its own
``init`` and hands ``step`` to it; ``step(state, data) -> (state, info)`` is pure,
``data`` is a pytree of arrays the step reads but never changes (passed to the
compiled loop as arguments, so large data is not baked into the program as a
constant, and shared by all chains) and ``info`` a dict of arrays, one of them the
scalar objective. The driver owns everything around it:
compiling chunks of steps with ``lax.scan``, the convergence monitor, stopping at
a non-finite objective, the progress bar and the per-iteration trace. With
``num_chains`` the state carries a leading chain axis, the step is vmapped, and
each chain is frozen as soon as it converges while the others go on.

:func:`run_python` is the plain loop for steps that cannot be compiled as one
(data arriving in batches from a Python iterable, torch, a black-box objective).
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

Info = dict[str, jax.Array]


class Monitor(NamedTuple):
    """A convergence test carried inside the compiled loop.

    ``init()`` returns the monitor's state (NumPy values); ``update(state, info)`` returns the new
    state and a boolean scalar, True once the run has converged.
    """

    init: Callable[[], Any]
    update: Callable[[Any, Info], tuple[Any, jax.Array]]


@functools.lru_cache(maxsize=64)
def absolute_change(key: str, tol: float) -> Monitor:
    """Converged when ``|info[key]_t - info[key]_{t-1}| < tol`` (scikit-learn's EM rule)."""

    def update(previous, info):
        value = info[key]
        return value, jnp.abs(value - previous) < tol

    return Monitor(lambda: np.asarray(np.inf), update)


@functools.lru_cache(maxsize=16)
def reported(key: str) -> Monitor:
    """Converged when the step itself says so in ``info[key]`` (a boolean scalar)."""
    return Monitor(lambda: np.asarray(0.0), lambda state, info: (state, info[key]))


_NEVER = Monitor(lambda: np.asarray(0.0), lambda s, info: (s, jnp.asarray(False)))


class RunOutput(NamedTuple):
    state: Any
    trace: dict[str, np.ndarray]  # (iteration, ...) or (chain, iteration, ...); NaN after a chain stopped
    n_iter: np.ndarray  # steps taken, () or (chain,)
    converged: np.ndarray  # the monitor fired, () or (chain,)
    failed: np.ndarray  # stopped at a non-finite objective, () or (chain,)


def run(
    step: Callable[[Any, Any], tuple[Any, Info]],
    state,
    *,
    data=(),
    max_iter: int,
    objective: str,
    monitor: Monitor | None = None,
    num_chains: int | None = None,
    sequential_chains: bool = False,
    chunk_size: int = 100,
    progress: bool = True,
    desc: str = "",
) -> RunOutput:
    """Run ``step`` up to ``max_iter`` times (per chain), stopping chains that converge.

    Chains are vectorised (``vmap``), or with ``sequential_chains`` stepped one after
    another: better where a step is dominated by LAPACK calls, which run one matrix
    at a time either way, because then a stopped chain costs nothing (under ``vmap``
    every chain computes each step until the last one stops).

    A chain whose ``info[objective]`` turns non-finite is stopped at its last finite
    state and flagged in ``failed``; the caller decides whether that is an error.
    """
    # a power of two at most chunk_size: few distinct programs, whatever max_iter is
    chunk_size = min(chunk_size, 1 << max(max_iter - 1, 0).bit_length())
    batched = num_chains is not None
    shape = (num_chains,) if batched else ()
    monitor = monitor or _NEVER
    run_chunk = _chunk_runner(step, monitor, objective, chunk_size, batched, sequential_chains)
    # the loop's own counters and flags start on the host (NumPy): built with JAX, each
    # would compile a small program of its own on a routine's first call
    limit = np.asarray(max_iter)
    mstate = monitor.init()
    if batched:
        mstate = jax.tree.map(lambda x: np.broadcast_to(x, shape + np.shape(x)), mstate)
    carry = (state, mstate, np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, int))
    chunks = []
    with tqdm(total=max_iter, desc=desc, disable=not progress, delay=1.0, leave=False) as bar:
        while True:
            before = int(np.asarray(carry[4]).max())
            carry, info = run_chunk(carry, data, limit)
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
        trace[key] = np.moveaxis(values, 0, 1) if batched else values
    converged = np.asarray(done) & ~np.asarray(failed)
    return RunOutput(state, trace, np.asarray(n_iter), converged, np.asarray(failed))


@functools.lru_cache(maxsize=16)
def _chunk_runner(step, monitor: Monitor, objective: str, chunk_size: int, batched: bool, sequential: bool):
    """The compiled chunk of ``chunk_size`` steps. Cached, so a routine whose step and
    monitor compare equal across calls (a frozen dataclass, not a fresh closure)
    reuses the compiled program for data of the same shapes."""

    def one_step(carry, data, max_iter):
        state, mstate, done, failed, n = carry
        active = ~done & (n < max_iter)

        def advance(_):
            new_state, info = step(state, data)
            new_mstate, converged = monitor.update(mstate, info)
            bad = ~jnp.isfinite(info[objective])
            keep = jax.tree.map(lambda new, old: jnp.where(bad, old, new), new_state, state)
            return keep, new_mstate, converged & ~bad, bad, info

        def skip(_):
            info = jax.eval_shape(lambda s: step(s, data)[1], state)
            nan_info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info)  # masked below
            return state, mstate, done, jnp.asarray(False), nan_info

        state, mstate, converged, bad, info = jax.lax.cond(active, advance, skip, None)
        info = jax.tree.map(lambda v: jnp.where(active, v, jnp.nan), info)
        return (state, mstate, done | converged | bad, failed | (active & bad), n + active), info

    if not batched:
        body = one_step
    elif sequential:
        body = lambda carry, data, max_iter: jax.lax.map(lambda c: one_step(c, data, max_iter), carry)  # noqa: E731
    else:
        body = jax.vmap(one_step, in_axes=(0, None, None))

    @jax.jit
    def run_chunk(carry, data, max_iter):
        return jax.lax.scan(lambda c, _: body(c, data, max_iter), carry, None, length=chunk_size)

    return run_chunk


def run_python(
    step: Callable[[Any, Any], tuple[Any, Info]],
    state,
    items: Iterable,
    *,
    objective: str,
    total: int | None = None,
    progress: bool = True,
    desc: str = "",
) -> RunOutput:
    """Apply ``state, info = step(state, item)`` for each item, in a plain Python loop.

    Stops at the first non-finite ``info[objective]``, keeping the state before it
    (``failed`` is then True). ``converged`` is True when every item was consumed.
    """
    rows: list[dict] = []
    failed = False
    for item in tqdm(items, total=total, desc=desc, disable=not progress, delay=1.0, leave=False):
        new_state, info = step(state, item)
        info = {key: np.asarray(value) for key, value in info.items()}  # JAX arrays, tensors or floats
        if not np.all(np.isfinite(info[objective])):
            failed = True
            break
        state = new_state
        rows.append(info)
    trace = {key: np.stack([np.asarray(row[key]) for row in rows]) for key in (rows[0] if rows else {})}
    return RunOutput(state, trace, np.asarray(len(rows)), np.asarray(not failed), np.asarray(failed))
