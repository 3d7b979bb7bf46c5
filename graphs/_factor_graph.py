"""The factor graph: a bipartite ``networkx`` graph of variables and factors.

A :class:`FactorGraph` is built incrementally and validated as it grows; inference
never reads it directly but a :class:`FrozenFactorGraph`, an immutable snapshot
taken by :meth:`FactorGraph.freeze`, so a graph edited after a call cannot change
what that call computed.
"""

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral

import networkx as nx
import numpy as np

from bayeskit.models._numerics import as_real_array


@dataclass(frozen=True, order=True)
class FactorNode:
    """The node of factor number ``index`` in ``FactorGraph.graph`` (variables are their names)."""

    index: int

    def __repr__(self) -> str:
        return f"FactorNode({self.index})"


@dataclass(frozen=True, eq=False)
class FrozenFactorGraph:
    """An immutable snapshot of a factor graph, in index form, for inference.

    ``scopes[f]`` lists the variable indices of factor ``f`` in the order of the axes
    of ``log_tables[f]``; tables are read-only float64 arrays of log potentials.
    """

    variables: tuple[str, ...]
    cardinalities: tuple[int, ...]
    states: tuple[tuple, ...]
    scopes: tuple[tuple[int, ...], ...]
    log_tables: tuple[np.ndarray, ...]
    index: Mapping[str, int] = field(repr=False)

    @property
    def num_variables(self) -> int:
        return len(self.variables)

    @property
    def num_factors(self) -> int:
        return len(self.scopes)

    def is_forest(self) -> bool:
        """Whether the factor graph has no cycle, where belief propagation is exact."""
        edges = sum(len(scope) for scope in self.scopes)
        nodes = self.num_variables + self.num_factors
        return edges == nodes - _num_components(self)


def _num_components(fg: FrozenFactorGraph) -> int:
    parent = list(range(fg.num_variables))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for scope in fg.scopes:
        for other in scope[1:]:
            parent[find(other)] = find(scope[0])
    return len({find(i) for i in range(fg.num_variables)}) + sum(not scope for scope in fg.scopes)


class FactorGraph:
    """A discrete factor graph held in a bipartite ``networkx.Graph``.

    Variable nodes are their names (strings) with attributes ``cardinality`` and
    ``states``; factor nodes are :class:`FactorNode` objects with attributes
    ``variables`` and ``log_table``. Both carry networkx's ``bipartite`` flag (0 for
    variables, 1 for factors). The joint distribution is

    .. math:: p(x) = \\frac{1}{Z} \\prod_f \\psi_f(x_{\\partial f}).

    Examples
    --------
    >>> fg = FactorGraph()
    >>> fg.add_variable("rain", 2, states=("no", "yes"))
    >>> fg.add_variable("wet", 2)
    >>> fg.add_factor(["rain"], [0.8, 0.2])
    FactorNode(0)
    >>> fg.add_factor(["rain", "wet"], [[0.9, 0.1], [0.2, 0.8]])
    FactorNode(1)
    """

    def __init__(self):
        self.graph = nx.Graph()
        self._variables: dict[str, int] = {}
        self._factors: list[FactorNode] = []
        self._frozen: FrozenFactorGraph | None = None
        # where the graph came from and what a reader changed (e.g. renormalised CPDs)
        self.provenance: dict = {}

    def __repr__(self) -> str:
        return f"FactorGraph({len(self._variables)} variables, {len(self._factors)} factors)"

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self._variables)

    @property
    def factors(self) -> tuple[FactorNode, ...]:
        return tuple(self._factors)

    def cardinality(self, variable: str) -> int:
        return self._variables[self._known(variable, "variable")]

    def states(self, variable: str) -> tuple:
        return self.graph.nodes[self._known(variable, "variable")]["states"]

    def add_variable(self, name: str, cardinality: int, states: Sequence[Hashable] | None = None) -> None:
        """Add a variable with ``cardinality`` states, optionally named (in index order)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"variable name must be a non-empty str, got {name!r}")
        if name in self._variables:
            raise ValueError(f"variable {name!r} is already in the graph")
        if isinstance(cardinality, bool) or not isinstance(cardinality, Integral) or cardinality < 1:
            raise ValueError(f"cardinality of {name!r} must be a positive int, got {cardinality!r}")
        cardinality = int(cardinality)
        if states is None:
            states = tuple(range(cardinality))
        else:
            states = tuple(states)
            if len(states) != cardinality:
                raise ValueError(
                    f"states of {name!r} must name its {cardinality} states, got {len(states)}: {states!r}"
                )
            if len(set(states)) != cardinality:
                raise ValueError(f"states of {name!r} must be distinct, got {states!r}")
        self.graph.add_node(name, bipartite=0, cardinality=cardinality, states=states)
        self._variables[name] = cardinality
        self._frozen = None

    def add_factor(self, variables: Sequence[str], table=None, *, log_table=None) -> FactorNode:
        """Add a factor over ``variables``: a non-negative ``table`` whose axes follow
        ``variables``, or its logarithm as ``log_table`` (entries may be ``-inf``)."""
        if isinstance(variables, str):
            variables = [variables]
        variables = tuple(variables)
        for v in variables:
            self._known(v, "factor variable")
        if len(set(variables)) != len(variables):
            raise ValueError(f"factor variables must be distinct, got {variables!r}")
        if (table is None) == (log_table is None):
            raise TypeError("pass exactly one of table and log_table")
        shape = tuple(self._variables[v] for v in variables)
        name = "table" if log_table is None else "log_table"
        values = as_real_array(name, table if log_table is None else log_table)
        if values.shape != shape:
            raise ValueError(
                f"{name} over {variables!r} must have shape {shape} (the cardinalities), got {values.shape}"
            )
        low, high = values.min(), values.max()  # NaN propagates to both
        if np.isnan(low):
            raise ValueError(f"{name} over {variables!r} contains NaN")
        if log_table is None:
            if low < 0 or high == np.inf:
                raise ValueError(f"table over {variables!r} must be finite and non-negative, got min {low}, max {high}")
            if high == 0:
                raise ValueError(
                    f"factor over {variables!r} is zero everywhere (every configuration has probability 0)"
                )
            with np.errstate(divide="ignore"):
                values = np.log(values)
        elif high == np.inf:
            raise ValueError(f"log_table over {variables!r} contains +inf")
        elif high == -np.inf:
            raise ValueError(f"factor over {variables!r} is zero everywhere (every configuration has probability 0)")
        values.setflags(write=False)
        node = FactorNode(len(self._factors))
        self.graph.add_node(node, bipartite=1, variables=variables, log_table=values)
        self.graph.add_edges_from([(node, v) for v in variables])
        self._factors.append(node)
        self._frozen = None
        return node

    @classmethod
    def from_bif(cls, path) -> "FactorGraph":
        """Read a Bayesian network in BIF (``.bif`` or ``.bif.gz``): one factor per CPD,
        over ``(child, *parents)``, with the network's state names and order."""
        from ._readers import from_bif

        return from_bif(path)

    @classmethod
    def from_uai(cls, path) -> "FactorGraph":
        """Read a MARKOV or BAYES network in the UAI inference-competition format."""
        from ._readers import from_uai

        return from_uai(path)

    @classmethod
    def from_pgmpy(cls, model) -> "FactorGraph":
        """Convert a pgmpy ``DiscreteBayesianNetwork`` or ``DiscreteMarkovNetwork``."""
        from ._readers import from_pgmpy

        return from_pgmpy(model)

    def freeze(self) -> FrozenFactorGraph:
        """The immutable snapshot inference reads (cached until the graph changes)."""
        if self._frozen is None:
            if not self._factors:
                raise ValueError("the factor graph has no factors")
            index = {name: i for i, name in enumerate(self._variables)}
            nodes = self.graph.nodes
            self._frozen = FrozenFactorGraph(
                variables=tuple(self._variables),
                cardinalities=tuple(self._variables.values()),
                states=tuple(nodes[v]["states"] for v in self._variables),
                scopes=tuple(tuple(index[v] for v in nodes[f]["variables"]) for f in self._factors),
                log_tables=tuple(nodes[f]["log_table"] for f in self._factors),
                index=index,
            )
        return self._frozen

    def _known(self, variable, role: str) -> str:
        if variable not in self._variables:
            raise ValueError(f"{role} {variable!r} is not in the graph; add it with add_variable first")
        return variable


def log_evidence(fg: FrozenFactorGraph, evidence: Mapping | None) -> dict[int, np.ndarray]:
    """Evidence as log-likelihood vectors by variable index.

    A value is a state index (int), a state name, or a likelihood vector over the
    variable's states (soft evidence: non-negative, finite, not all zero).
    """
    if evidence is None:
        return {}
    if not isinstance(evidence, Mapping):
        raise TypeError(f"evidence must be a dict of variable -> state, got {type(evidence).__name__}")
    out = {}
    for variable, value in evidence.items():
        if variable not in fg.index:
            raise ValueError(f"evidence names {variable!r}, which is not a variable of the graph")
        i = fg.index[variable]
        card, states = fg.cardinalities[i], fg.states[i]
        if isinstance(value, bool | np.bool_):
            raise TypeError(
                f"evidence for {variable!r} must be a state index, a state name or a likelihood "
                f"vector, got the bool {value!r}"
            )
        if isinstance(value, Integral):  # an index, even where the state names are numbers
            if not 0 <= value < card:
                raise ValueError(f"evidence state of {variable!r} must be in 0..{card - 1}, got {value}")
            likelihood = np.eye(card)[int(value)]
        elif isinstance(value, Hashable) and not isinstance(value, tuple) and value in states:
            likelihood = np.eye(card)[states.index(value)]
        elif isinstance(value, str) or np.ndim(value) != 1:
            raise ValueError(
                f"evidence for {variable!r} must be a state index, one of {states!r}, or a likelihood "
                f"vector of length {card}; got {value!r}"
            )
        else:
            likelihood = as_real_array("likelihood", value)
            if (
                likelihood.shape != (card,)
                or not np.isfinite(likelihood).all()
                or (likelihood < 0).any()
                or not likelihood.any()
            ):
                raise ValueError(
                    f"soft evidence for {variable!r} must be {card} finite non-negative numbers, "
                    f"not all zero; got {value!r}"
                )
        with np.errstate(divide="ignore"):
            out[i] = np.log(likelihood)
    return out
