"""BayesianMLP: its hand-written density and gradient equal the traced program's."""

import dataclasses

import numpy as np
import pytest
import torch

from bayeskit.inference._sg_target import _traced_log_joint, bind_target
from bayeskit.models import BayesianMLP


def _data(net: BayesianMLP, n: int, rng: torch.Generator):
    X = torch.randn(n, net.in_features, generator=rng)
    if net.likelihood == "gaussian":
        shape = (n,) if net.out_features == 1 else (n, net.out_features)
        return net.check_data(X, torch.randn(shape, generator=rng))
    classes = 2 if net.likelihood == "bernoulli" else net.out_features
    return net.check_data(X, torch.randint(0, classes, (n,), generator=rng))


NETWORKS = [
    dict(likelihood="gaussian", out_features=1, activation="relu"),
    dict(likelihood="gaussian", out_features=3, activation="tanh"),
    dict(likelihood="bernoulli", out_features=1, activation="tanh"),
    dict(likelihood="categorical", out_features=4, activation="relu"),
]


@pytest.mark.parametrize("options", NETWORKS, ids=lambda o: f"{o['likelihood']}-{o['out_features']}")
def test_density_and_gradient_match_the_traced_program(options):
    torch.set_default_dtype(torch.float64)
    try:
        rng = torch.Generator().manual_seed(0)
        net = BayesianMLP(5, hidden=(7, 6), prior_scale=1.5, **options)
        X, y = _data(net, 30, rng)
        target = bind_target(net, X, y, plate="data", routine="test")
        position = target.init(rng) + 0.3 * torch.randn(sum(s.numel() for s in target.shapes.values()), generator=rng)
        values = target.constrain(position)
        np.testing.assert_allclose(
            float(net.log_joint(values, X, y, 3.0)),
            float(_traced_log_joint(net, values, X, y, "data", 3.0)),
            rtol=1e-12,
        )
        autograd = dataclasses.replace(target, value_and_grad_by_site=None)
        for jacobian in (False, True):
            fast = target.value_and_grad(position, X, y, likelihood_scale=3.0, jacobian=jacobian)
            slow = autograd.value_and_grad(position, X, y, likelihood_scale=3.0, jacobian=jacobian)
            np.testing.assert_allclose(fast[0], slow[0], rtol=1e-12)
            np.testing.assert_allclose(fast[1].numpy(), slow[1].numpy(), rtol=1e-10, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_prior_scales_with_fan_in():
    net = BayesianMLP(16, hidden=(100,), out_features=1, prior_scale=2.0)
    assert net.prior_scales() == {
        "layers.0.weight": 0.5,
        "layers.0.bias": 2.0,
        "layers.1.weight": 0.2,
        "layers.1.bias": 2.0,
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_features=0), "in_features"),
        (dict(in_features=3, hidden=(0,)), "hidden"),
        (dict(in_features=3, likelihood="poisson"), "likelihood"),
        (dict(in_features=3, likelihood="bernoulli", out_features=2), "out_features=1"),
        (dict(in_features=3, likelihood="categorical", out_features=1), "2 classes"),
        (dict(in_features=3, prior_scale=-1.0), "prior_scale"),
        (dict(in_features=3, activation="gelu"), "activation"),
        (dict(in_features=3, prior_scale=True), "prior_scale"),
        (dict(in_features=3, hidden=5), "hidden must be a tuple"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BayesianMLP(**kwargs)


def test_bad_data():
    net = BayesianMLP(3, likelihood="categorical", out_features=4)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 3\)"):
        net.check_data(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="class labels in \\[0, 4\\); got 1 outside, e.g. 4"):
        net.check_data(np.zeros((5, 3)), np.array([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="y must have shape \\(5,\\)"):
        net.check_data(np.zeros((5, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="0/1 labels"):
        BayesianMLP(3, likelihood="bernoulli").check_data(np.zeros((2, 3)), np.array([0.0, 0.5]))
