"""Brute-force enumeration of a small factor graph: the ground truth for exact inference and BP."""

import numpy as np
from scipy.special import logsumexp


def joint_log_table(fg, evidence_logs=None) -> np.ndarray:
    """The unnormalised log joint over every variable, axes in variable order."""
    frozen = fg.freeze()
    cards = frozen.cardinalities
    log_p = np.zeros(cards)
    factors = list(zip(frozen.scopes, frozen.log_tables, strict=True))
    factors += [((frozen.index[v],), values) for v, values in (evidence_logs or {}).items()]
    for scope, table in factors:
        shape = [1] * len(cards)
        for i in scope:
            shape[i] = cards[i]
        log_p = log_p + np.transpose(table, np.argsort(scope)).reshape(shape)
    return log_p


def enumerate_graph(fg, evidence_logs=None):
    """(marginals by name, log Z, MAP assignment by name, MAP log score)."""
    frozen = fg.freeze()
    log_p = joint_log_table(fg, evidence_logs)
    log_z = logsumexp(log_p)
    p = np.exp(log_p - log_z)
    axes = range(log_p.ndim)
    marginals = {v: p.sum(axis=tuple(j for j in axes if j != i)) for i, v in enumerate(frozen.variables)}
    best = np.unravel_index(np.argmax(log_p), log_p.shape)
    return marginals, float(log_z), dict(zip(frozen.variables, map(int, best), strict=True)), float(log_p.max())


def random_tree(rng, num_variables: int, max_arity: int = 3):
    """A random factor tree: each factor joins one variable already placed with up to
    ``max_arity - 1`` new ones, with a random unary factor on the first."""
    from bayeskit.graphs import FactorGraph

    fg = FactorGraph()
    cards = rng.integers(2, 4, size=num_variables)
    for i, k in enumerate(cards):
        fg.add_variable(f"v{i}", int(k))
    fg.add_factor(["v0"], rng.random(cards[0]) + 0.1)
    placed, rest = [0], list(range(1, num_variables))
    while rest:
        new = [rest.pop(0) for _ in range(min(len(rest), int(rng.integers(1, max_arity))))]
        scope = [int(rng.choice(placed)), *new]
        rng.shuffle(scope)
        fg.add_factor([f"v{i}" for i in scope], 2 * rng.random([cards[i] for i in scope]))
        placed += new
    return fg


def random_graph(rng, num_variables: int, num_factors: int, zeros: float = 0.0):
    """A random (loopy) factor graph; ``zeros`` is the share of table entries set to 0."""
    from bayeskit.graphs import FactorGraph

    fg = FactorGraph()
    cards = rng.integers(2, 4, size=num_variables)
    for i, k in enumerate(cards):
        fg.add_variable(f"v{i}", int(k))
    for _ in range(num_factors):
        scope = rng.choice(num_variables, size=int(rng.integers(1, 4)), replace=False)
        table = rng.random([cards[i] for i in scope])
        table[rng.random(table.shape) < zeros] = 0.0
        if not table.any():
            table.flat[0] = 1.0
        fg.add_factor([f"v{i}" for i in scope], table)
    return fg
