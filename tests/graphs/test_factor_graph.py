"""FactorGraph validation, the builders, and exact_marginals against brute-force enumeration."""

import networkx as nx
import numpy as np
import pytest

from bayeskit.graphs import FactorGraph, chain, exact_marginals, ising_grid, potts_grid
from bayeskit.graphs._exact import junction_tree
from tests.graphs.brute_force import enumerate_graph, joint_log_table, random_graph


def _pair():
    fg = FactorGraph()
    fg.add_variable("a", 2, states=("off", "on"))
    fg.add_variable("b", 3)
    return fg


def test_graph_is_bipartite_networkx_with_attributes():
    fg = _pair()
    node = fg.add_factor(["a", "b"], np.ones((2, 3)))
    assert isinstance(fg.graph, nx.Graph) and nx.is_bipartite(fg.graph)
    assert set(fg.graph.neighbors(node)) == {"a", "b"}
    assert fg.graph.nodes["a"]["states"] == ("off", "on") and fg.graph.nodes["b"]["cardinality"] == 3
    assert fg.graph.nodes[node]["variables"] == ("a", "b")
    np.testing.assert_array_equal(fg.graph.nodes[node]["log_table"], np.zeros((2, 3)))


@pytest.mark.parametrize(
    "variables, table, match",
    [
        (["a", "b"], np.ones((3, 2)), r"shape \(2, 3\)"),
        (["a", "b"], -np.ones((2, 3)), "non-negative"),
        (["a", "b"], np.full((2, 3), np.nan), "NaN"),
        (["a", "b"], np.full((2, 3), np.inf), "finite"),
        (["a", "c"], np.ones((2, 3)), "'c' is not in the graph"),
        (["a", "a"], np.ones((2, 2)), "distinct"),
        (["a", "b"], np.zeros((2, 3)), "zero everywhere"),
    ],
)
def test_bad_factors_are_rejected(variables, table, match):
    with pytest.raises(ValueError, match=match):
        _pair().add_factor(variables, table)


def test_bad_variables_and_log_tables_are_rejected():
    with pytest.raises(TypeError, match="fg must be a bayeskit.graphs.FactorGraph, got NoneType"):
        exact_marginals(None)
    fg = _pair()
    with pytest.raises(ValueError, match="already"):
        fg.add_variable("a", 2)
    with pytest.raises(ValueError, match="positive int"):
        fg.add_variable("c", 0)
    with pytest.raises(ValueError, match="name its 2 states"):
        fg.add_variable("c", 2, states=("x",))
    with pytest.raises(TypeError, match="non-empty str"):
        fg.add_variable(3, 2)
    with pytest.raises(ValueError, match=r"\+inf"):
        fg.add_factor(["a"], log_table=[0.0, np.inf])
    with pytest.raises(ValueError, match="zero everywhere"):
        fg.add_factor(["a"], log_table=[-np.inf, -np.inf])
    with pytest.raises(TypeError, match="exactly one"):
        fg.add_factor(["a"], [1.0, 1.0], log_table=[0.0, 0.0])
    with pytest.raises(ValueError, match="no factors"):
        fg.freeze()


def test_snapshot_is_frozen_and_refreshed_after_edits():
    fg = _pair()
    fg.add_factor(["a"], [1.0, 3.0])
    first = fg.freeze()
    assert fg.freeze() is first
    with pytest.raises(ValueError):
        first.log_tables[0][0] = 5.0  # read-only
    fg.add_factor(["b"], [1.0, 1.0, 2.0])
    assert fg.freeze() is not first and first.num_factors == 1


@pytest.mark.parametrize("seed", range(8))
def test_exact_marginals_equal_enumeration_on_loopy_graphs(seed):
    rng = np.random.default_rng(seed)
    fg = random_graph(rng, 7, 9, zeros=0.2 if seed % 2 else 0.0)
    truth, log_z, _, _ = enumerate_graph(fg)
    answer = junction_tree(fg.freeze(), {})
    for name, marginal in zip(fg.variables, answer.marginals, strict=True):
        np.testing.assert_allclose(marginal, truth[name], atol=1e-12)
    assert abs(answer.log_partition - log_z) < 1e-10


def test_exact_marginals_with_hard_soft_and_named_evidence():
    rng = np.random.default_rng(3)
    fg = random_graph(rng, 6, 8)
    fg.add_variable("s", 2, states=("low", "high"))
    fg.add_factor(["s", "v0"], rng.random((2, fg.cardinality("v0"))))
    evidence = {"v1": 1, "v2": [0.2, 0.5, 1.0][: fg.cardinality("v2")], "s": "high"}
    with np.errstate(divide="ignore"):
        logs = {"v1": np.log(np.eye(fg.cardinality("v1"))[1]), "v2": np.log(evidence["v2"]), "s": np.log([0, 1.0])}
    truth, _, _, _ = enumerate_graph(fg, logs)
    got = exact_marginals(fg, evidence=evidence)
    for name in fg.variables:
        np.testing.assert_allclose(got[name], truth[name], atol=1e-12)


def test_exact_marginals_reject_impossible_and_malformed_evidence():
    fg = _pair()
    fg.add_factor(["a", "b"], [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="probability zero"):
        exact_marginals(fg, evidence={"a": 0, "b": 2})
    with pytest.raises(ValueError, match="not a variable"):
        exact_marginals(fg, evidence={"z": 0})
    with pytest.raises(ValueError, match=r"in 0\.\.1"):
        exact_marginals(fg, evidence={"a": 2})
    with pytest.raises(ValueError, match="likelihood"):
        exact_marginals(fg, evidence={"a": "maybe"})
    with pytest.raises(ValueError, match="soft evidence"):
        exact_marginals(fg, evidence={"b": [0.0, 0.0, 0.0]})


def test_ising_grid_defines_the_ising_energy():
    fg = ising_grid(2, 3, coupling=0.7, field=np.arange(6.0).reshape(2, 3) / 10)
    frozen = fg.freeze()
    assert frozen.num_variables == 6 and frozen.num_factors == 6 + 7
    spins = np.array([1, -1, 1, 1, 1, -1]).reshape(2, 3)
    log_p = joint_log_table(fg)
    state = tuple(((spins.ravel() + 1) // 2).tolist())
    edges = [((i, j), (i, j + 1)) for i in range(2) for j in range(2)] + [((0, j), (1, j)) for j in range(3)]
    energy = sum(0.7 * spins[a] * spins[b] for a, b in edges) + np.sum(np.arange(6.0).reshape(2, 3) / 10 * spins)
    assert log_p[state] == pytest.approx(energy, abs=1e-12)
    # sizes may be NumPy integers, as from a shape or a loop over an array
    assert ising_grid(np.int64(2), 2).freeze().num_variables == 4


def test_spin_glass_is_reproducible_and_potts_has_its_states():
    first, second = ising_grid(3, 3, 1.0, 0.5, rng_key=4), ising_grid(3, 3, 1.0, 0.5, rng_key=4)
    for a, b in zip(first.freeze().log_tables, second.freeze().log_tables, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len({float(t[0, 0]) for t in first.freeze().log_tables[9:]}) > 1  # couplings differ
    potts = potts_grid(2, 2, 3, coupling=1.2)
    assert potts.cardinality("x_1_1") == 3
    np.testing.assert_allclose(potts.freeze().log_tables[-1], 1.2 * np.eye(3))
    with pytest.raises(ValueError, match="field must be"):
        ising_grid(2, 2, field=np.ones((3, 3)))
    with pytest.raises(ValueError, match="num_states"):
        potts_grid(2, 2, 1)


def test_chain_builds_an_hmm_and_rejects_bad_tables():
    fg = chain([0.6, 0.4], [[0.7, 0.3], [0.2, 0.8]], [[0.9, 0.1], [0.3, 0.7]], [0, 1, 1])
    assert fg.variables == ("z_0", "z_1", "z_2") and len(fg.factors) == 1 + 2 + 3
    assert len(chain([0.5, 0.5], np.eye(2), observations=5).variables) == 5
    with pytest.raises(ValueError, match="rows must sum to 1"):
        chain([0.5, 0.6], np.eye(2), observations=2)
    with pytest.raises(ValueError, match=r"observations must lie in 0\.\.1"):
        chain([0.5, 0.5], np.eye(2), np.eye(2), [0, 2])
    with pytest.raises(ValueError, match="shape"):
        chain([0.5, 0.5], np.eye(3), observations=2)
