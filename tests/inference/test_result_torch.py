"""Result.save / Result.load of the torch models: a DiffusionModel comes back with its network's
weights (read with weights_only=True), a BayesianMLP from its arguments, and a model that is
code (an analytic score, a user's network) loads as model=None."""

import io
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from bayeskit.inference import Result, predictive, robbins_monro, sample, sgld, train_score_model
from bayeskit.models import BayesianMLP, DiffusionModel
from bayeskit.models._diffusion import ConvDenoiser, MLPDenoiser, Schedule

DIFFUSION_CLASS = "bayeskit.models._diffusion.DiffusionModel"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained(net, schedule="cosine", num_timesteps=None, dim=2):
    data = np.random.default_rng(0).normal(size=(200, dim)) * np.linspace(1, 3, dim) + 2.0
    model = DiffusionModel(dim, schedule, num_timesteps, net=net)
    return train_score_model(model, data, num_steps=20, batch_size=32, progress=False)


def draws(model, **options):
    return sample(model, 50, num_steps=5, rng_key=3, progress=False, **options).draws["x"]


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


NETWORKS = {
    "mlp": lambda: trained(MLPDenoiser(2, hidden=16, depth=2), "cosine", 50),
    # float64, and a schedule with other parameters than its name's: saved as arrays
    "mlp-float64-custom-schedule": lambda: trained(
        MLPDenoiser(2, hidden=8, depth=1).double(), Schedule.linear(40, beta_max=10.0)
    ),
    "conv": lambda: trained(ConvDenoiser((4, 4), channels=8, num_blocks=1, embedding_size=8), "ve", 20, dim=16),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_a_trained_diffusion_model_comes_back_and_samples_the_same_draws(name, tmp_path):
    res = NETWORKS[name]()
    model = res.model
    loaded = Result.load(res.save(tmp_path / "trained.nc")).model
    assert isinstance(loaded, DiffusionModel) and type(loaded.net) is type(model.net)
    assert_same_tensors(loaded.net.state_dict(), model.net.state_dict())
    assert loaded.dtype == model.dtype and loaded.normalize == model.normalize and loaded.is_trained
    np.testing.assert_array_equal(loaded.mean, model.mean)
    np.testing.assert_array_equal(loaded.std, model.std)
    assert loaded.schedule.kind == model.schedule.kind
    for array in ("t", "alpha", "sigma", "scale"):
        np.testing.assert_array_equal(getattr(loaded.schedule, array), getattr(model.schedule, array))
    np.testing.assert_array_equal(draws(loaded), draws(model))
    # a sampler's result carries the model too
    out = sample(model, 20, method="ode", num_steps=4, rng_key=1, progress=False)
    again = Result.load(out.save(tmp_path / "drawn.nc"))
    np.testing.assert_array_equal(draws(again.model, method="ode"), draws(model, method="ode"))


def test_the_weights_are_a_state_dict_read_with_weights_only(tmp_path, monkeypatch):
    res = trained(MLPDenoiser(2, hidden=16, depth=2), "cosine", 50)
    path = res.save(tmp_path / "trained.nc")
    with xr.open_dataset(path, engine="h5netcdf", group="model_weights") as group:
        blob = group["state_dict"].values
    with xr.open_dataset(path, engine="h5netcdf", group="fit_trace") as group:
        config = json.loads(group.attrs["model_config"])  # the arguments: JSON in the result's attrs
    assert blob.dtype == np.uint8
    assert config["net"] == {"class": "MLPDenoiser", "dim": 2, "hidden": 16, "depth": 2, "embedding_size": 32,
                             "precondition": True}  # fmt: skip
    assert config["schedule"] == {"kind": "cosine", "num_timesteps": 50} and config["dtype"] == "float32"
    tensors = torch.load(io.BytesIO(blob.tobytes()), weights_only=True)
    assert tensors.keys() == {"net"}  # a named schedule is rebuilt from its name and size
    assert_same_tensors(tensors["net"], res.model.net.state_dict())

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append(kwargs) or real_load(*args, **kwargs))
    Result.load(path)
    assert len(calls) == 1 and calls[0]["weights_only"] is True


class OwnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, y, t):
        return self.linear(y)


class DerivedNet(MLPDenoiser):
    pass


@pytest.mark.parametrize("kind", ["analytic", "own-net", "derived-net"])
def test_a_model_that_is_code_loads_as_none(kind, tmp_path):
    if kind == "analytic":
        model = DiffusionModel.from_score(lambda x, t: -x, dim=2, schedule=Schedule.linear(50))
    else:
        model = trained(OwnNet() if kind == "own-net" else DerivedNet(2, hidden=8, depth=1), "cosine", 50).model
    out = sample(model, 20, num_steps=4, progress=False)
    path = out.save(tmp_path / "out.nc")
    with h5py.File(path) as file:
        assert "model_weights" not in file
    loaded = Result.load(path)
    assert loaded.model is None and loaded._model_class == DIFFUSION_CLASS  # its registered checks still run
    np.testing.assert_array_equal(loaded.draws["x"], out.draws["x"])


def test_a_bnn_result_comes_back_with_a_usable_network(tmp_path):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(100, 2)), rng.normal(size=100)
    net = BayesianMLP(2, hidden=(8,), activation="tanh", prior_scale=1.5)
    fit = robbins_monro(net, X, y, num_steps=50, batch_size=20, progress=False)
    path = fit.save(tmp_path / "fit.nc")
    with h5py.File(path) as file:
        assert "model_weights" not in file  # its weights are the params
    loaded = Result.load(path)
    assert isinstance(loaded.model, BayesianMLP) and loaded.model._config() == net._config()
    inputs = torch.as_tensor(X[:5], dtype=torch.float32)

    def f(res):
        return res.model.predict({k: torch.as_tensor(v) for k, v in res.params.items()}, inputs)

    torch.testing.assert_close(f(loaded), f(fit), rtol=0, atol=0)
    post = sgld(net, X, y, num_samples=20, num_chains=2, thinning=2, num_warmup=10, batch_size=20, progress=False)
    back = Result.load(post.save(tmp_path / "post.nc"))
    np.testing.assert_array_equal(predictive(back, inputs)["y"], predictive(post, inputs)["y"])


def test_a_file_naming_a_class_outside_bayeskit_is_refused(tmp_path):
    net = BayesianMLP(2, hidden=(4,))
    path = Result(method="robbins_monro", model=net, params={"sigma": np.ones(())}).save(tmp_path / "fit.nc")
    with h5py.File(path, "r+") as file:
        file["params"].attrs["model_class"] = "builtins.eval"
    with pytest.raises(ValueError, match="builtins.eval"):
        Result.load(path)


def test_loading_a_result_of_a_jax_model_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from bayeskit.inference import Result\n"
        "from bayeskit.models import GaussianMixture\n"
        "path = Result(method='em', model=GaussianMixture(2), params={'weights': np.full(2, 0.5)}).save(sys.argv[1])\n"
        "assert isinstance(Result.load(path).model, GaussianMixture)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "em.nc")], check=True)
