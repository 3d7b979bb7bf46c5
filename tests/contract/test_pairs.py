import arviz
import pytest

from bayeskit.inference import Report, Result, diagnose

from .pairs import PAIRS


@pytest.mark.parametrize("pair", PAIRS, ids=[p.name for p in PAIRS])
def test_pair_keeps_the_contract(pair):
    res = pair.run()
    assert isinstance(res, Result)
    idata = res.to_inference_data()
    assert isinstance(idata, arviz.InferenceData)
    assert idata.groups(), "an InferenceData with no groups"
    if res.draws:
        chains = res.num_chains
        for name, values in res.draws.items():
            assert values.shape[0] == chains, name
            assert idata.posterior[name].shape == values.shape
    report = diagnose(res)
    assert isinstance(report, Report) and report.checks
    assert report.ok, str(report)
    pair.oracle(res)
