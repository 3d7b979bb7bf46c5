"""Sum- and max-product belief propagation on a factor graph, in the log domain.

Only factor-to-variable messages are stored, one row per edge. A sweep is a few
array operations: variable beliefs are a segment sum of the incoming messages
(plus the evidence), a variable-to-factor message is the belief less the message
that came from that factor, and factors of one arity and padded cardinality are
updated together as one batched log-sum-exp (or max). Cardinalities are padded to
the largest with ``-inf`` (impossible) states. Subtracting a ``-inf`` message from a
``-inf`` belief would give NaN, so beliefs keep a count of the zero messages they
multiply beside the sum of the finite ones (exact, not a floor).

Kschischang, Frey & Loeliger (2001) for the algorithm, Yedidia, Freeman & Weiss
(2005) for the Bethe free energy, Elidan, McGraw & Koller (2006) for residual
scheduling.
"""

import functools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bayeskit.graphs import FactorGraph
from bayeskit.graphs._exact import elimination_cliques, junction_tree
from bayeskit.graphs._factor_graph import FrozenFactorGraph, log_evidence

from ._driver import reported, run
from ._result import Result
from ._validation import check_choice, check_positive_float, check_positive_int

# residual schedule: a sweep updates the factors whose pending change is at least
# this share of the largest one
RESIDUAL_SHARE = 0.1
# exact marginals are computed beside BP (for the diagnostics) up to this size
EXACT_MAX_VARIABLES = 1000
EXACT_MAX_CLIQUE_ENTRIES = 2**20


@dataclass(frozen=True)
class _Group:
    """Factors of one arity, padded to one cardinality and updated as one array."""

    arity: int
    width: int
    count: int
    offset: int  # their first edge; factor i's edges are offset + i * arity + (0 .. arity - 1)


@dataclass(frozen=True)
class Sweep:
    """One synchronous update of every factor-to-variable message (the ``step``)."""

    groups: tuple[_Group, ...]
    num_variables: int
    width: int
    kind: str
    schedule: str

    def __call__(self, messages, data):
        tables, edge_variable, log_ev, damping, tol = data
        incoming = self.to_factors(messages, edge_variable, log_ev)
        proposed = jnp.concatenate([self._update(g, t, incoming) for g, t in zip(self.groups, tables, strict=True)])
        change = jnp.max(jnp.abs(jnp.exp(proposed) - jnp.exp(messages)), axis=1)  # undamped, per edge
        residual = jnp.max(change)
        # where() rather than the formula alone: 0 * -inf is NaN when damping is 0
        damped = _log_normalize((1 - damping) * proposed + damping * messages)[0]
        proposed = jnp.where(damping > 0, damped, proposed)
        if self.schedule == "residual":
            per_factor = jnp.concatenate(
                [
                    jnp.repeat(
                        jnp.max(change[g.offset : g.offset + g.count * g.arity].reshape(g.count, g.arity), 1), g.arity
                    )
                    for g in self.groups
                ]
            )
            proposed = jnp.where((per_factor >= RESIDUAL_SHARE * residual)[:, None], proposed, messages)
        return proposed, {"residual": residual, "converged": residual < tol}

    def to_factors(self, messages, edge_variable, log_ev):
        """Variable-to-factor messages, normalised, one row per edge."""
        belief, zeros = self.beliefs(messages, edge_variable, log_ev)
        finite, is_zero = _split(messages)
        out = jnp.where(zeros[edge_variable] - is_zero > 0.5, -jnp.inf, belief[edge_variable] - finite)
        return _log_normalize(out)[0]

    def beliefs(self, messages, edge_variable, log_ev):
        """Unnormalised log beliefs as (sum of the finite log factors, count of zero factors)."""
        finite, is_zero = _split(messages)
        ev_finite, ev_zero = _split(log_ev)
        belief = ev_finite + jax.ops.segment_sum(finite, edge_variable, self.num_variables)
        zeros = ev_zero + jax.ops.segment_sum(is_zero, edge_variable, self.num_variables)
        return belief, zeros

    def _update(self, group, table, incoming):
        a, w = group.arity, group.width
        q = incoming[group.offset : group.offset + group.count * a].reshape(group.count, a, self.width)[:, :, :w]
        reduce = jax.nn.logsumexp if self.kind == "sum" else jnp.max
        out = []
        for j in range(a):
            s = table
            for k in range(a):
                if k != j:
                    s = s + q[:, k].reshape((group.count,) + tuple(w if i == k else 1 for i in range(a)))
            out.append(reduce(s, axis=tuple(1 + i for i in range(a) if i != j)) if a > 1 else s)
        new = jnp.stack(out, axis=1)
        new = jnp.pad(new, ((0, 0), (0, 0), (0, self.width - w)), constant_values=-jnp.inf)
        return _log_normalize(new.reshape(group.count * a, self.width))[0]


def _split(log_values):
    zero = jnp.isneginf(log_values)
    return jnp.where(zero, 0.0, log_values), zero.astype(log_values.dtype)


def _log_normalize(log_values):
    log_z = jax.nn.logsumexp(log_values, axis=-1, keepdims=True)
    return log_values - log_z, log_z


class _Packed:
    """A frozen graph laid out for :class:`Sweep`: groups, padded tables, edge index."""

    def __init__(self, fg: FrozenFactorGraph):
        self.width = max(fg.cardinalities)
        # one group per arity, padded to its widest variable: each group is compiled
        # code of its own, so fewer groups compile faster at little padding cost
        by_arity: dict[int, list[int]] = {}
        for f, scope in enumerate(fg.scopes):
            if scope:  # a constant factor only scales Z
                by_arity.setdefault(len(scope), []).append(f)
        groups, tables, edge_variable, self.edges_of = [], [], [], {}
        offset = 0
        for arity, factors in sorted(by_arity.items()):
            width = max(fg.cardinalities[i] for f in factors for i in fg.scopes[f])
            padded = np.full((len(factors),) + (width,) * arity, -np.inf)
            for i, f in enumerate(factors):
                padded[(i, *map(slice, fg.log_tables[f].shape))] = fg.log_tables[f]
                edge_variable.extend(fg.scopes[f])
                self.edges_of[f] = offset + i * arity + np.arange(arity)
            groups.append(_Group(arity, width, len(factors), offset))
            tables.append(padded)
            offset += len(factors) * arity
        self.groups = tuple(groups)
        self.tables = tuple(tables)
        self.edge_variable = np.asarray(edge_variable, dtype=np.int32)
        self.valid = np.arange(self.width) < np.asarray(fg.cardinalities)[:, None]  # (n, width)
        self.constant = sum(float(t) for t, s in zip(fg.log_tables, fg.scopes, strict=True) if not s)


def belief_propagation(
    fg: FactorGraph,
    evidence: Mapping | None = None,
    kind: str = "sum",
    max_iter: int = 200,
    tol: float = 1e-8,
    damping: float = 0.0,
    schedule: str = "flooding",
    *,
    progress: bool = True,
) -> Result:
    """Belief propagation: exact on trees, loopy (optionally damped) elsewhere.

    Parameters
    ----------
    fg : FactorGraph
    evidence : dict, optional
        ``{variable: value}``: a state index, a state name, or a likelihood vector
        over the variable's states (soft evidence).
    kind : {"sum", "max"}
        Sum-product (marginals and the Bethe ``log Z``) or max-product (the MAP
        assignment and max-marginals).
    max_iter : int
        Sweeps at most.
    tol : float
        Converged when no message would change by more than ``tol`` (in
        probability) in an undamped update. Measuring the undamped change means
        damping cannot fake convergence: a damped step moves ``1 - damping`` of it.
    damping : float in [0, 1)
        ``m <- (1 - damping) m_new + damping m_old`` in the log domain.
    schedule : {"flooding", "residual"}
        ``"flooding"`` updates every message each sweep; ``"residual"`` only those
        of factors whose pending change is at least a tenth of the largest (a
        batched form of residual BP, which often converges where flooding cycles).
    progress : bool

    Returns
    -------
    Result
        ``marginals[var]``: normalised beliefs (max-marginals for ``kind="max"``);
        ``params``: the MAP assignment ``{var: state index}`` (``kind="max"``),
        decoded variable by variable, each taking its best state given those already
        fixed (the lowest on a tie), so the assignment is consistent and, on trees,
        optimal; where several assignments are optimal, which one is returned can
        depend on round-off in the messages; ``trace["residual"]``; ``converged``; ``info`` with
        ``log_partition`` (the Bethe estimate of ``log Z``, with the evidence; exact
        on trees) or ``log_score`` (the MAP's unnormalised log probability),
        ``is_tree``, ``num_iterations`` and, for graphs small enough,
        ``exact_max_error``: the largest marginal error against the junction tree.

    Examples
    --------
    >>> from bayeskit.graphs import chain
    >>> hmm = chain([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]], [[0.8, 0.2], [0.3, 0.7]], [0, 0, 1])
    >>> res = belief_propagation(hmm, progress=False)
    >>> res.marginals["z_2"].round(3)
    array([0.415, 0.585])
    """
    if not isinstance(fg, FactorGraph):
        raise TypeError(f"fg must be a FactorGraph, got {type(fg).__name__}")
    check_choice("kind", kind, ("sum", "max"))
    check_choice("schedule", schedule, ("flooding", "residual"))
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_positive_float("tol", tol)
    damping = check_positive_float("damping", damping, allow_zero=True)
    if damping >= 1:
        raise ValueError(f"damping must lie in [0, 1), got {damping}")
    frozen = fg.freeze()
    evidence_logs = log_evidence(frozen, evidence)
    packed = _packed(frozen)
    log_ev = np.where(packed.valid, 0.0, -np.inf)
    for i, values in evidence_logs.items():
        log_ev[i, : values.size] += values

    sweep = Sweep(packed.groups, frozen.num_variables, packed.width, kind, schedule)
    data = (packed.tables, packed.edge_variable, log_ev, np.asarray(damping), np.asarray(tol))
    init = np.where(packed.valid[packed.edge_variable], 0.0, -np.inf)
    init -= np.log(np.asarray(frozen.cardinalities))[packed.edge_variable, None]
    out = run(
        sweep,
        jnp.asarray(init),
        data=data,
        max_iter=max_iter,
        objective="residual",
        monitor=reported("converged"),
        progress=progress,
        desc="belief propagation",
    )
    messages = out.state
    beliefs, var_terms, factor_terms, incoming = jax.device_get(_finish(sweep, messages, data))
    impossible = ~np.isfinite(beliefs).all(axis=1)
    if out.failed or impossible.any():
        where = (
            f" (every state of {frozen.variables[int(np.argmax(impossible))]} was ruled out)"
            if impossible.any()
            else ""
        )
        raise ValueError(f"the evidence has probability zero under the model{where}")
    marginals = {name: beliefs[i, : frozen.cardinalities[i]] for i, name in enumerate(frozen.variables)}
    info = {
        "kind": kind,
        "schedule": schedule,
        "damping": damping,
        "tol": tol,
        "num_iterations": int(out.n_iter),
        "is_tree": frozen.is_forest(),
    }
    params = {}
    if kind == "sum":
        info["log_partition"] = float(np.sum(var_terms) + np.sum(factor_terms) + packed.constant)
    else:
        assignment = _decode(frozen, packed, np.asarray(incoming), log_ev)
        params = {name: np.asarray(assignment[i]) for i, name in enumerate(frozen.variables)}
        info["log_score"] = _log_score(frozen, assignment, evidence_logs)
    exact = _exact_if_small(frozen, evidence_logs, kind)
    if exact is not None:
        errors = {v: float(np.max(np.abs(marginals[v] - m))) for v, m in zip(frozen.variables, exact, strict=True)}
        worst = max(errors, key=errors.get)
        info["exact_max_error"] = errors[worst]
        info["exact_worst_variable"] = worst
    return Result(
        method="belief_propagation",
        model=fg,
        params=params,
        marginals=marginals,
        trace={"residual": out.trace["residual"]},
        converged=bool(out.converged),
        info=info,
    )


@functools.lru_cache(maxsize=8)
def _packed(fg: FrozenFactorGraph) -> _Packed:
    # snapshots hash by identity, so a graph queried repeatedly is laid out once
    return _Packed(fg)


@functools.partial(jax.jit, static_argnums=0)
def _finish(sweep: Sweep, messages, data):
    """Normalised beliefs, the Bethe free-energy terms, and the variable-to-factor messages."""
    tables, edge_variable, log_ev, _, _ = data
    belief, zeros = sweep.beliefs(messages, edge_variable, log_ev)
    log_beliefs = _log_normalize(jnp.where(zeros > 0.5, -jnp.inf, belief))[0]
    incoming = sweep.to_factors(messages, edge_variable, log_ev)
    b = jnp.exp(log_beliefs)
    degree = jax.ops.segment_sum(jnp.ones_like(edge_variable, dtype=b.dtype), edge_variable, sweep.num_variables)
    # sum_x b log(evidence) + (d - 1) sum_x b log b, with 0 log 0 = 0
    var_terms = jnp.sum(jnp.where(b > 0, b * (log_ev + (degree[:, None] - 1) * log_beliefs), 0.0), axis=1)
    factor_terms = []
    for group, table in zip(sweep.groups, tables, strict=True):
        a, w = group.arity, group.width
        q = incoming[group.offset : group.offset + group.count * a].reshape(group.count, a, sweep.width)[:, :, :w]
        s = table
        for k in range(a):
            s = s + q[:, k].reshape((group.count,) + tuple(w if i == k else 1 for i in range(a)))
        axes = tuple(range(1, a + 1))
        log_b = s - jax.nn.logsumexp(s, axis=axes, keepdims=True)
        bf = jnp.exp(log_b)
        factor_terms.append(jnp.sum(jnp.where(bf > 0, bf * (table - log_b), 0.0), axis=axes))
    return b, var_terms, jnp.concatenate(factor_terms), incoming


def _decode(fg: FrozenFactorGraph, packed: _Packed, incoming: np.ndarray, log_ev: np.ndarray) -> np.ndarray:
    """The MAP assignment from max-product messages, one variable at a time.

    Variables are fixed in breadth-first order; each takes the best state given the
    ones already fixed (exact max-marginals conditional on them, on a tree), so
    ties cannot produce an inconsistent joint assignment.
    """
    n = fg.num_variables
    factors_of = [[] for _ in range(n)]
    for f, scope in enumerate(fg.scopes):
        for j, v in enumerate(scope):
            factors_of[v].append((f, j))
    assignment = np.full(n, -1)
    for v in _breadth_first(fg, factors_of):
        score = log_ev[v, : fg.cardinalities[v]].copy()
        for f, j in factors_of[v]:
            scope = fg.scopes[f]
            free = [k for k, u in enumerate(scope) if k == j or assignment[u] < 0]
            s = fg.log_tables[f][tuple(slice(None) if k in free else assignment[u] for k, u in enumerate(scope))]
            for axis, k in enumerate(free):
                if k != j:
                    shape = [1] * len(free)
                    shape[axis] = fg.cardinalities[scope[k]]
                    s = s + incoming[packed.edges_of[f][k], : shape[axis]].reshape(shape)
            score = score + np.max(s, axis=tuple(a for a, k in enumerate(free) if k != j))
        assignment[v] = int(np.argmax(score))
    return assignment


def _breadth_first(fg: FrozenFactorGraph, factors_of) -> list[int]:
    seen = np.zeros(fg.num_variables, bool)
    order = []
    for root in range(fg.num_variables):
        if seen[root]:
            continue
        seen[root] = True
        queue = deque([root])
        while queue:
            v = queue.popleft()
            order.append(v)
            for f, _ in factors_of[v]:
                for u in fg.scopes[f]:
                    if not seen[u]:
                        seen[u] = True
                        queue.append(u)
    return order


def _log_score(fg: FrozenFactorGraph, assignment, evidence_logs) -> float:
    score = sum(float(t[tuple(assignment[list(s)])]) for s, t in zip(fg.scopes, fg.log_tables, strict=True))
    return score + sum(float(values[assignment[i]]) for i, values in evidence_logs.items())


def _exact_if_small(fg: FrozenFactorGraph, evidence_logs, kind) -> list[np.ndarray] | None:
    """Exact marginals for the diagnostics, where the junction tree is cheap."""
    if kind != "sum" or fg.num_variables > EXACT_MAX_VARIABLES:
        return None
    scopes = list(fg.scopes) + [(i,) for i in evidence_logs]
    cliques = elimination_cliques(fg.num_variables, scopes, fg.cardinalities)
    largest = max(np.prod([fg.cardinalities[u] for u in c], dtype=float) for c in cliques.values())
    if largest > EXACT_MAX_CLIQUE_ENTRIES:
        return None
    return junction_tree(fg, evidence_logs).marginals
