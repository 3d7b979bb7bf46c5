"""Exact marginals and log partition function by a junction tree.

The elimination order is greedy min-fill (ties: the smaller clique, then the
variable added first). Eliminating ``v`` forms the clique ``C_v = {v} ∪ N(v)``, and
the clique of the earliest-eliminated variable of ``C_v \\ {v}`` is its parent: an
elimination tree, which has the running-intersection property. One upward pass of
sum-messages gives ``log Z``, one downward pass (Hugin updates, where ``0/0 = 0`` is
exact) every clique's marginal. Each clique orders its variables by elimination
position, so every separator is a prefix-free subsequence of its parent's clique and
messages broadcast with a reshape, never a transpose.
"""

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ._factor_graph import FactorGraph, FrozenFactorGraph, log_evidence


class ExactAnswer(NamedTuple):
    marginals: list[np.ndarray]  # normalised, by variable index
    log_partition: float  # log Z, with the evidence included (log p(evidence) for a Bayesian network)


def exact_marginals(fg: FactorGraph | FrozenFactorGraph, evidence: Mapping | None = None) -> dict[str, np.ndarray]:
    """Exact single-variable marginals, ``p(x_v | evidence)`` for every variable.

    Variable elimination with a min-fill order, arranged as a junction tree so that
    one pass up and one down give every marginal. Its cost is exponential in the
    treewidth of the graph (cheap for ASIA, ALARM, PIGS or ANDES, hopeless for a
    large grid, where :func:`~bayeskit.inference.belief_propagation` is the tool).

    Parameters
    ----------
    fg : FactorGraph
    evidence : dict, optional
        ``{variable: state}``: a state index, a state name, or a likelihood vector.

    Returns
    -------
    dict[str, ndarray]
        The normalised marginal table of each variable, in state order.

    Examples
    --------
    >>> fg = FactorGraph()
    >>> fg.add_variable("a", 2); fg.add_variable("b", 2)
    >>> _ = fg.add_factor(["a"], [0.3, 0.7]); _ = fg.add_factor(["a", "b"], [[0.9, 0.1], [0.2, 0.8]])
    >>> exact_marginals(fg, evidence={"b": 1})["a"].round(4)
    array([0.0508, 0.9492])
    """
    if not isinstance(fg, FactorGraph | FrozenFactorGraph):
        raise TypeError(f"fg must be a bayeskit.graphs.FactorGraph, got {type(fg).__name__}")
    frozen = fg.freeze() if isinstance(fg, FactorGraph) else fg
    answer = junction_tree(frozen, log_evidence(frozen, evidence))
    return dict(zip(frozen.variables, answer.marginals, strict=True))


def junction_tree(fg: FrozenFactorGraph, evidence: Mapping[int, np.ndarray]) -> ExactAnswer:
    """Marginals and ``log Z`` of ``fg`` with log-likelihood ``evidence`` by variable index."""
    scopes = list(fg.scopes) + [(i,) for i in evidence]
    log_tables = list(fg.log_tables) + list(evidence.values())
    cliques = elimination_cliques(fg.num_variables, scopes, fg.cardinalities)
    order = list(cliques)
    position = np.empty(fg.num_variables, int)
    position[order] = np.arange(fg.num_variables)
    log_z = 0.0
    potentials = {v: np.ones([fg.cardinalities[u] for u in cliques[v]]) for v in order}
    for scope, log_table in zip(scopes, log_tables, strict=True):
        shift = np.max(log_table)  # tables enter in probability space, scaled to a maximum of 1
        log_z += shift
        if not scope:
            continue
        table = np.exp(log_table - shift)
        home = order[min(position[i] for i in scope)]
        potentials[home] = potentials[home] * _expand(table, scope, cliques[home], position)

    # upward: eliminate v from its clique and pass the rest to its parent
    upward = {}
    for v in order:
        clique = cliques[v]
        message = potentials[v].sum(axis=0)
        if len(clique) == 1:
            total = float(message)
            if total <= 0:
                raise ValueError("the evidence has probability zero under the model")
            log_z += np.log(total)
            continue
        scale = message.max()
        if scale <= 0:
            raise ValueError("the evidence has probability zero under the model")
        message = message / scale
        log_z += np.log(scale)
        upward[v] = message
        parent = clique[1]
        potentials[parent] = potentials[parent] * _broadcast(message, clique[1:], cliques[parent], position)

    # downward: a child's belief is its potential times (new separator / old separator)
    for v in reversed(order):
        clique = cliques[v]
        if len(clique) == 1:
            continue
        parent = cliques[clique[1]]
        kept = {position[u] for u in clique[1:]}
        drop = tuple(a for a, u in enumerate(parent) if position[u] not in kept)
        separator = potentials[clique[1]].sum(axis=drop, keepdims=True).reshape(upward[v].shape)
        separator = separator / separator.max()
        ratio = np.divide(separator, upward[v], out=np.zeros_like(separator), where=upward[v] > 0)
        potentials[v] = potentials[v] * ratio[None]

    marginals = []
    for v in range(fg.num_variables):
        belief = potentials[v].sum(axis=tuple(range(1, potentials[v].ndim)))
        marginals.append(belief / belief.sum())
    return ExactAnswer(marginals, float(log_z))


def min_fill_order(num_variables: int, scopes, cardinalities) -> list[int]:
    """Greedy min-fill elimination order over the interaction graph of ``scopes``."""
    neighbours = _interaction_graph(num_variables, scopes)

    def score(i):
        nbrs = neighbours[i]
        fill = sum(len(nbrs - neighbours[u]) - 1 for u in nbrs) // 2
        weight = math.prod(cardinalities[u] for u in nbrs) * cardinalities[i]
        return fill, weight, i

    scores = {i: score(i) for i in range(num_variables)}
    order = []
    while scores:
        v = min(scores, key=scores.__getitem__)
        del scores[v]
        order.append(v)
        nbrs = neighbours[v]
        for u in nbrs:
            neighbours[u] |= nbrs
            neighbours[u].discard(u)
            neighbours[u].discard(v)
        affected = set(nbrs)
        for u in nbrs:
            affected |= neighbours[u]
        for u in affected:
            if u in scores:
                scores[u] = score(u)
    return order


def elimination_cliques(num_variables: int, scopes, cardinalities) -> dict[int, tuple[int, ...]]:
    """``C_v`` for each variable in min-fill elimination order, each ordered by
    elimination position (``v`` first)."""
    order = min_fill_order(num_variables, scopes, cardinalities)
    position = np.empty(num_variables, int)
    position[order] = np.arange(num_variables)
    neighbours = _interaction_graph(num_variables, scopes)
    cliques = {}
    for v in order:
        nbrs = neighbours[v] - {v}
        cliques[v] = (v, *sorted(nbrs, key=position.__getitem__))
        for u in nbrs:
            neighbours[u] |= nbrs
            neighbours[u].discard(v)
    return cliques


def _interaction_graph(num_variables: int, scopes) -> list[set]:
    """Each variable's neighbours: the variables it shares a factor with."""
    neighbours = [set() for _ in range(num_variables)]
    for scope in scopes:
        for i in scope:
            neighbours[i].update(scope)
    for i in range(num_variables):
        neighbours[i].discard(i)
    return neighbours


def _expand(table, scope, clique, position) -> np.ndarray:
    """A factor table transposed to elimination order and broadcast to ``clique``'s axes."""
    axes = sorted(range(len(scope)), key=lambda a: position[scope[a]])
    return _broadcast(np.transpose(table, axes), [scope[a] for a in axes], clique, position)


def _broadcast(table, variables, clique, position) -> np.ndarray:
    """Insert unit axes so a table over ``variables`` (a subsequence of ``clique``) broadcasts."""
    present = set(variables)
    return table.reshape([table.shape[variables.index(u)] if u in present else 1 for u in clique])
