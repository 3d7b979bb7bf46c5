"""Readers of BIF, UAI and pgmpy networks, with pgmpy's own reader as the oracle."""

import gzip
from importlib import resources

import numpy as np
import pytest

from bayeskit.graphs._factor_graph import FactorGraph
from bayeskit.graphs._readers import from_bif, from_pgmpy, from_uai, load_network

NETWORKS = ("asia", "alarm", "child")


def table(fg: FactorGraph, k: int) -> np.ndarray:
    return np.exp(fg.graph.nodes[fg.factors[k]]["log_table"])


def scope(fg: FactorGraph, k: int) -> tuple[str, ...]:
    return fg.graph.nodes[fg.factors[k]]["variables"]


def pgmpy_file(name: str):
    pytest.importorskip("pgmpy")
    return resources.files("pgmpy") / "utils" / "example_models" / f"{name}.bif.gz"


@pytest.fixture(scope="module")
def pgmpy_models():
    """pgmpy's reading of its bundled BIF files (its BIFReader opens no gzip: pass the text)."""
    pytest.importorskip("pgmpy")
    from pgmpy.readwrite import BIFReader

    return {
        name: BIFReader(string=gzip.decompress(pgmpy_file(name).read_bytes()).decode()).get_model() for name in NETWORKS
    }


@pytest.fixture(scope="module")
def ours():
    return {name: from_bif(pgmpy_file(name)) for name in NETWORKS}


def assert_same_graph(a: FactorGraph, b: FactorGraph, atol=0.0):
    fa, fb = a.freeze(), b.freeze()
    assert fa.variables == fb.variables
    assert fa.cardinalities == fb.cardinalities
    assert fa.states == fb.states
    assert fa.scopes == fb.scopes
    for ta, tb in zip(fa.log_tables, fb.log_tables, strict=True):
        np.testing.assert_allclose(np.exp(ta), np.exp(tb), rtol=0, atol=atol)


# ------------------------------------------------------------------ BIF against pgmpy


@pytest.mark.parametrize("name", NETWORKS)
def test_from_bif_matches_pgmpy(name, ours, pgmpy_models):
    fg, model = ours[name], pgmpy_models[name]
    assert fg.variables == tuple(model.nodes())
    assert len(fg.factors) == len(fg.variables)
    for k, v in enumerate(fg.variables):
        cpd = model.get_cpds(v)
        assert fg.cardinality(v) == model.get_cardinality(v)
        assert fg.states(v) == tuple(cpd.state_names[v])
        assert scope(fg, k) == tuple(cpd.variables)  # one factor per variable: child first, then parents
        expected = cpd.get_values() / cpd.get_values().sum(axis=0)
        np.testing.assert_allclose(table(fg, k), expected.reshape(cpd.cardinality), rtol=0, atol=1e-12)
    assert fg.provenance["source"] == str(pgmpy_file(name))
    assert fg.provenance["format"] == "bif"


@pytest.mark.parametrize("name", NETWORKS)
def test_from_pgmpy_equals_from_bif(name, ours, pgmpy_models):
    fg = from_pgmpy(pgmpy_models[name])
    # pgmpy parses numbers with pandas, which may differ from float() in the last bit
    assert_same_graph(fg, ours[name], atol=1e-15)
    assert fg.provenance["renormalised"].keys() == ours[name].provenance["renormalised"].keys()


def test_alarm_columns_are_renormalised():
    fg = load_network("alarm")
    renormalised = fg.provenance["renormalised"]
    assert renormalised  # ALARM prints some columns that sum to 1 only within 1e-7
    assert all(1e-12 < deviation <= 1e-6 for deviation in renormalised.values())
    for k in range(len(fg.factors)):
        np.testing.assert_allclose(table(fg, k).sum(axis=0), 1.0, rtol=0, atol=1e-12)
    assert load_network("asia").provenance["renormalised"] == {}


@pytest.mark.parametrize("name", ["asia", "alarm"])
def test_load_network_reads_the_shipped_copy(name, ours):
    fg = load_network(name)
    assert_same_graph(fg, ours[name])
    assert fg.provenance["network"] == name
    assert fg.provenance["source"].endswith(f"{name}.bif.gz")


def test_load_network_rejects_other_names():
    with pytest.raises(ValueError, match="asia.*alarm"):
        load_network("child")


# ------------------------------------------------------------------ BIF details

# Charniak's dog problem in the original BIF style: quoted names, no "|", "table" with
# parents (child slowest, last parent fastest), comments and properties.
DOG = """// a comment
network "Dog-Problem" { property "credal-set 1.1" ; }
variable "family-out" { type discrete[2] { "true" "false" }; property "position = (1, 2)" ; }
variable "bowel-problem" { type discrete[2] { "true" "false" }; }
variable "dog-out" { type discrete[2] { "true" "false" }; }
/* P(dog-out | bowel-problem, family-out) */
probability ( "dog-out" "bowel-problem" "family-out" ) {
    table 0.99 0.97 0.9 0.3 0.01 0.03 0.1 0.7 ;
}
probability ( "family-out" ) { table 0.15 0.85 ; }
probability ( "bowel-problem" ) { table 0.01 0.99 ; }
"""


def test_bif_table_with_parents(tmp_path):
    path = tmp_path / "dog.bif"
    path.write_text(DOG)
    fg = from_bif(path)
    assert fg.variables == ("family-out", "bowel-problem", "dog-out")
    assert fg.states("dog-out") == ("true", "false")
    assert fg.provenance["network"] == "Dog-Problem"
    assert scope(fg, 2) == ("dog-out", "bowel-problem", "family-out")
    dog = table(fg, 2)
    # P(dog out | family out, no bowel problem) = 0.9, P(dog out | bowel problem, family in) = 0.97
    assert dog[0, 1, 0] == pytest.approx(0.9) and dog[0, 0, 1] == pytest.approx(0.97)
    np.testing.assert_allclose(dog[1], 1 - dog[0])

    pytest.importorskip("pgmpy")
    from pgmpy.readwrite import BIFReader

    cpd = BIFReader(string=DOG).get_model().get_cpds("dog-out")
    assert tuple(cpd.variables) == scope(fg, 2)
    np.testing.assert_allclose(dog, cpd.values, rtol=0, atol=1e-15)


def test_bif_gzipped_equals_plain(tmp_path):
    plain, zipped = tmp_path / "dog.bif", tmp_path / "dog.bif.gz"
    plain.write_text(DOG)
    zipped.write_bytes(gzip.compress(DOG.encode()))
    assert_same_graph(from_bif(zipped), from_bif(plain))


def bif(tmp_path, column_yes: str) -> str:
    path = tmp_path / "bad.bif"
    path.write_text(f"""network bad {{ }}
variable rain {{ type discrete [ 2 ] {{ yes, no }}; }}
variable wet {{ type discrete [ 3 ] {{ dry, damp, soaked }}; }}
probability ( rain ) {{ table 0.2, 0.8; }}
probability ( wet | rain ) {{
  (yes) {column_yes};
  (no) 0.7, 0.2, 0.1;
}}
""")
    return path


def test_bif_column_off_by_1e7_is_renormalised(tmp_path):
    fg = from_bif(bif(tmp_path, "0.1, 0.3, 0.6000001"))
    assert fg.provenance["renormalised"] == {"wet": pytest.approx(1e-7, rel=1e-6)}
    np.testing.assert_allclose(table(fg, 1).sum(axis=0), 1.0, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "column, message",
    [
        ("0.1, 0.3, 0.7", r"CPD of 'wet'.*\(rain=yes\) does not sum to 1 \(sum 1.1"),
        ("0.5, -0.1, 0.6", r"CPD of 'wet'.*\(rain=yes\) contains a negative entry"),
        ("0.5, nan, 0.5", r"CPD of 'wet'.*\(rain=yes\) contains NaN"),
        ("0.5, 0.5", r"'wet'.*row \(yes\) has 2 entries, expected 3"),
    ],
)
def test_bif_bad_columns(tmp_path, column, message):
    with pytest.raises(ValueError, match=message):
        from_bif(bif(tmp_path, column))


def test_bif_missing_row(tmp_path):
    path = bif(tmp_path, "0.1, 0.3, 0.6")
    path.write_text(path.read_text().replace("  (no) 0.7, 0.2, 0.1;\n", ""))
    with pytest.raises(ValueError, match=r"'wet' has no row for parents \(rain=no\)"):
        from_bif(path)


# ------------------------------------------------------------------ UAI

MARKOV = """MARKOV
3
2 2 3
3
1 0
2 0 1
2 1 2

2
 0.4 1.6

4
 1.0 2.0
 3.0 0.5

6
 0.2 0.3 0.5
 1.0 0.0 4.0
"""

# P(x0) P(x1 | x0) P(x2 | x0, x1): the child is the last variable of each scope
BAYES = """BAYES
3
2 2 3
3
1 0
2 0 1
3 0 1 2
2 0.3 0.7
4 0.9 0.1 0.2 0.8
12 0.2 0.3 0.5  0.1 0.1 0.8  1 0 0  0.3333333 0.3333333 0.3333333
"""


def write(path, text: str, zipped: bool):
    if zipped:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("zipped", [False, True])
def test_uai_markov(tmp_path, zipped):
    path = write(tmp_path / "m.uai", MARKOV, zipped)
    fg = from_uai(path)
    assert fg.variables == ("x0", "x1", "x2")
    assert [fg.cardinality(v) for v in fg.variables] == [2, 2, 3]
    assert [scope(fg, k) for k in range(3)] == [("x0",), ("x0", "x1"), ("x1", "x2")]
    np.testing.assert_allclose(table(fg, 0), [0.4, 1.6])
    np.testing.assert_allclose(table(fg, 1), [[1.0, 2.0], [3.0, 0.5]])
    np.testing.assert_allclose(table(fg, 2), [[0.2, 0.3, 0.5], [1.0, 0.0, 4.0]])  # last variable fastest
    assert fg.provenance == {"source": str(path), "format": "uai-markov", "renormalised": {}}


@pytest.mark.parametrize("zipped", [False, True])
def test_uai_bayes(tmp_path, zipped):
    path = write(tmp_path / "b.uai", BAYES, zipped)
    fg = from_uai(path)
    assert [scope(fg, k) for k in range(3)] == [("x0",), ("x0", "x1"), ("x0", "x1", "x2")]
    np.testing.assert_allclose(table(fg, 1), [[0.9, 0.1], [0.2, 0.8]])
    x2 = table(fg, 2)
    np.testing.assert_allclose(x2[0, 1], [0.1, 0.1, 0.8])
    np.testing.assert_allclose(x2[1, 1], [1 / 3] * 3, atol=1e-15)  # renormalised from 0.3333333 each
    assert fg.provenance["renormalised"] == {"x2": pytest.approx(1e-7, rel=1e-6)}
    np.testing.assert_allclose(x2.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


def test_uai_bayes_bad_column(tmp_path):
    path = write(tmp_path / "b.uai", BAYES.replace("4 0.9 0.1 0.2 0.8", "4 0.9 0.1 0.2 0.9"), False)
    with pytest.raises(ValueError, match=r"CPD of 'x1'.*\(x0=1\) does not sum to 1 \(sum 1.1"):
        from_uai(path)


def test_uai_wrong_number_of_entries(tmp_path):
    path = write(tmp_path / "m.uai", MARKOV.replace("4\n 1.0 2.0\n 3.0 0.5", "3\n 1.0 2.0\n 3.0"), False)
    with pytest.raises(ValueError, match=r"function 1 over \('x0', 'x1'\) has 3 entries, expected 4"):
        from_uai(path)
    path = write(tmp_path / "m.uai", MARKOV + " 7.0\n", False)
    with pytest.raises(ValueError, match="after the last table"):
        from_uai(path)


# ------------------------------------------------------------------ pgmpy models


def test_pgmpy_markov_network():
    pytest.importorskip("pgmpy")
    from pgmpy.factors.discrete import DiscreteFactor
    from pgmpy.models import DiscreteMarkovNetwork

    model = DiscreteMarkovNetwork([("a", "b"), ("b", "c")])
    ab = DiscreteFactor(["a", "b"], [2, 3], np.arange(1.0, 7.0), state_names={"a": ["lo", "hi"], "b": [0, 1, 2]})
    bc = DiscreteFactor(["b", "c"], [3, 2], np.arange(1.0, 7.0) / 10)
    model.add_factors(ab, bc)
    fg = from_pgmpy(model)
    assert fg.variables == ("a", "b", "c")
    assert [fg.states(v) for v in fg.variables] == [("lo", "hi"), (0, 1, 2), (0, 1)]
    assert [scope(fg, k) for k in range(2)] == [("a", "b"), ("b", "c")]
    np.testing.assert_allclose(table(fg, 0), np.arange(1.0, 7.0).reshape(2, 3))
    np.testing.assert_allclose(table(fg, 1), np.arange(1.0, 7.0).reshape(3, 2) / 10)
    assert fg.provenance["format"] == "pgmpy-markov"


def test_pgmpy_non_str_names():
    pytest.importorskip("pgmpy")
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork

    model = DiscreteBayesianNetwork([(1, 2)])
    model.add_cpds(
        TabularCPD(1, 2, [[0.4], [0.6]]), TabularCPD(2, 2, [[0.1, 0.5], [0.9, 0.5]], evidence=[1], evidence_card=[2])
    )
    fg = from_pgmpy(model)
    assert fg.variables == ("1", "2")
    assert scope(fg, 1) == ("2", "1")
    np.testing.assert_allclose(table(fg, 1), [[0.1, 0.5], [0.9, 0.5]])


@pytest.mark.parametrize("model", [42, None, "asia"])
def test_from_pgmpy_rejects_other_types(model):
    with pytest.raises(TypeError, match=r"expected a pgmpy DiscreteBayesianNetwork or DiscreteMarkovNetwork, got"):
        from_pgmpy(model)
