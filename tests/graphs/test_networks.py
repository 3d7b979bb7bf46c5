"""Exact inference and loopy BP on published Bayesian networks, with pgmpy as the oracle."""

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest

from bayeskit.graphs import FactorGraph, exact_marginals
from bayeskit.inference import belief_propagation, diagnose

pgmpy = pytest.importorskip("pgmpy")
from pgmpy.inference import VariableElimination  # noqa: E402
from pgmpy.readwrite import BIFReader  # noqa: E402

EXAMPLES = Path(pgmpy.__file__).parent / "utils" / "example_models"
# a few observed leaves of each network, by state name
EVIDENCE = {
    "asia": {"dysp": "yes", "xray": "no"},
    "alarm": {"HRBP": "HIGH", "BP": "LOW", "EXPCO2": "LOW"},
    "child": {"LowerBodyO2": "<5", "CO2Report": ">=7.5", "XrayReport": "Oligaemic"},
}


def _pgmpy_model(name):
    text = gzip.decompress((EXAMPLES / f"{name}.bif.gz").read_bytes()).decode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BIFReader(string=text).get_model()


@pytest.mark.parametrize("name", sorted(EVIDENCE))
@pytest.mark.parametrize("with_evidence", [False, True])
def test_exact_marginals_equal_pgmpy_variable_elimination(name, with_evidence):
    model = _pgmpy_model(name)
    fg = FactorGraph.from_bif(EXAMPLES / f"{name}.bif.gz")
    evidence = EVIDENCE[name] if with_evidence else None
    ours = exact_marginals(fg, evidence=evidence)
    engine = VariableElimination(model)
    for variable in fg.variables:
        if evidence and variable in evidence:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factor = engine.query([variable], evidence=evidence, show_progress=False)
        # same state order: pgmpy's state names index its table
        theirs = np.array([factor.get_value(**{variable: s}) for s in fg.states(variable)])
        np.testing.assert_allclose(ours[variable], theirs, atol=1e-8, err_msg=variable)


@pytest.mark.parametrize("name", sorted(EVIDENCE))
def test_loopy_bp_converges_and_reports_its_error_against_exact(name):
    fg = FactorGraph.from_bif(EXAMPLES / f"{name}.bif.gz")
    res = belief_propagation(fg, evidence=EVIDENCE[name], progress=False, max_iter=500)
    exact = exact_marginals(fg, evidence=EVIDENCE[name])
    errors = {v: np.max(np.abs(res.marginals[v] - exact[v])) for v in fg.variables}
    assert res.converged
    assert res.info["exact_max_error"] == pytest.approx(max(errors.values()), abs=1e-12)
    assert res.info["exact_worst_variable"] == max(errors, key=errors.get)
    check = diagnose(res)["exact_marginals"]
    assert check.value == pytest.approx(max(errors.values()), abs=1e-12)
    assert check.status == ("ok" if check.value <= 0.05 else "warn")


def test_loopy_bp_error_on_alarm_is_largest_at_expco2():
    # EXPCO2's parents (ARTCO2, VENTLUNG) are strongly correlated through a loop:
    # loopy BP counts their shared evidence twice, a known limit it cannot fix
    fg = FactorGraph.from_bif(EXAMPLES / "alarm.bif.gz")
    res = belief_propagation(fg, progress=False)
    assert res.converged and res.info["exact_worst_variable"] == "EXPCO2" and res.info["exact_max_error"] > 0.1
    assert diagnose(res)["exact_marginals"].status == "warn"
