"""Diffusion models: samplers and likelihoods against closed-form targets, training on a 2-D mixture,
reproducibility, EMA, checkpoints and bad input.

Analytic scores make the samplers testable without training: for data from a Gaussian
mixture, every noisy marginal is a Gaussian mixture too,
p_t = sum_k w_k N(alpha_t m_k, alpha_t^2 S_k + sigma_t^2 I).
"""

import copy
import math

import numpy as np
import pytest
import scipy.stats
import torch

from bayeskit.inference import ConvergenceError, Result, diagnose, log_likelihood, sample, train_score_model
from bayeskit.inference._checks import energy_distance_test
from bayeskit.inference._diffusion import ema_decay_at
from bayeskit.models import DiffusionModel
from bayeskit.models._diffusion import Schedule

METHODS = ("ddpm", "ddim", "langevin", "sde", "ode")
MU = np.array([1.0, -2.0])
SIGMA = np.array([[2.0, 0.9], [0.9, 0.7]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[-3.0, 0.0], [2.0, 2.0], [2.0, -2.5]])
COVARIANCES = np.array([[[0.6, 0.3], [0.3, 0.5]], [[0.3, 0.0], [0.0, 0.8]], [[0.4, -0.2], [-0.2, 0.3]]])
# enough steps that each sampler's discretisation bias is well inside the Monte Carlo error of 4000 draws
EXACT_SETTINGS = {
    "ddpm": {},
    "ddim": {"num_steps": 200},
    "langevin": {"num_steps": 200},
    "sde": {"num_steps": 250, "langevin_steps": 1},
    "ode": {"num_steps": 50},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mixture_score(schedule, weights, means, covariances):
    """The score of p_t in the schedule's own units, each component in its eigenbasis."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariances)
    components = [
        (math.log(w), torch.tensor(m), torch.tensor(lam), torch.tensor(u))
        for w, m, lam, u in zip(weights, means, eigenvalues, eigenvectors, strict=True)
    ]

    def score(x, t):
        alpha, sigma = schedule.marginal(t)
        alpha, sigma2 = alpha[:, None], sigma[:, None] ** 2
        log_densities, gradients = [], []
        for log_weight, mean, lam, u in components:
            variance = alpha**2 * lam + sigma2
            z = (x - alpha * mean) @ u
            log_densities.append(log_weight - 0.5 * (z**2 / variance + torch.log(variance)).sum(1))
            gradients.append(-(z / variance) @ u.T)
        responsibilities = torch.softmax(torch.stack(log_densities, 1), dim=1)
        return sum(responsibilities[:, k, None] * g for k, g in enumerate(gradients))

    return score


def mixture_log_density(x, weights, means, covariances):
    terms = [
        math.log(w) + scipy.stats.multivariate_normal(m, c).logpdf(x)
        for w, m, c in zip(weights, means, covariances, strict=True)
    ]
    return np.logaddexp.reduce(np.stack(terms), axis=0)


def mixture_draws(n, rng, weights, means, covariances):
    component = rng.choice(len(weights), size=n, p=weights)
    noise = np.einsum("nde,ne->nd", np.linalg.cholesky(covariances)[component], rng.normal(size=(n, means.shape[1])))
    return means[component] + noise


def analytic(target: str, schedule="cosine") -> DiffusionModel:
    schedule = Schedule.named(schedule) if isinstance(schedule, str) else schedule
    if target == "gaussian":
        score = mixture_score(schedule, [1.0], MU[None], SIGMA[None])
    else:
        score = mixture_score(schedule, WEIGHTS, MEANS, COVARIANCES)
    return DiffusionModel.from_score(score, dim=2, schedule=schedule)


def passes_energy_distance(x, y) -> bool:
    distance, critical = energy_distance_test(x, y, rng=np.random.default_rng(0), max_points=500, num_permutations=100)
    return distance <= critical


def ring(n, rng, radius=4.0, scale=0.5):
    """The 8-Gaussian ring."""
    angle = 2 * np.pi * rng.integers(0, 8, n) / 8
    return np.c_[radius * np.cos(angle), radius * np.sin(angle)] + scale * rng.normal(size=(n, 2))


# --------------------------------------------------------------------------------------------------------------
# samplers and likelihoods against closed forms


@pytest.mark.parametrize("method", METHODS)
def test_every_sampler_reproduces_a_gaussian(method):
    n = 4000
    out = sample(analytic("gaussian"), n, method=method, rng_key=1, progress=False, **EXACT_SETTINGS[method])
    x = out.draws["x"][0]
    assert out.draws["x"].shape == (1, n, 2) and out.method == method
    # four standard errors: the mean sqrt(S_ii / n), the covariance sqrt((S_ii S_jj + S_ij^2) / n)
    assert np.all(np.abs(x.mean(0) - MU) < 4 * np.sqrt(np.diag(SIGMA) / n))
    cov_se = np.sqrt((np.outer(np.diag(SIGMA), np.diag(SIGMA)) + SIGMA**2) / n)
    assert np.all(np.abs(np.cov(x.T) - SIGMA) < 4 * cov_se)
    truth = np.random.default_rng(2).multivariate_normal(MU, SIGMA, 2000)
    assert passes_energy_distance(x, truth)


@pytest.mark.parametrize("method", METHODS)
def test_every_sampler_reproduces_a_gaussian_mixture(method):
    n = 4000
    out = sample(analytic("mixture"), n, method=method, rng_key=3, progress=False, **EXACT_SETTINGS[method])
    x = out.draws["x"][0]

    # draws split by their nearest mean: each cell's share is binomial and its mean has the cell's
    # spread; the true shares and means of the cells come from 200,000 draws of the target
    def cells(points):
        return np.argmin(((points[:, None] - MEANS[None]) ** 2).sum(-1), axis=1)

    reference = mixture_draws(200_000, np.random.default_rng(9), WEIGHTS, MEANS, COVARIANCES)
    reference_cell, cell = cells(reference), cells(x)
    true_share = np.bincount(reference_cell, minlength=3) / len(reference)
    share = np.bincount(cell, minlength=3) / n
    assert np.all(np.abs(share - true_share) < 4 * np.sqrt(true_share * (1 - true_share) / n))
    for k in range(3):
        mine, theirs = x[cell == k], reference[reference_cell == k]
        assert np.all(np.abs(mine.mean(0) - theirs.mean(0)) < 4 * theirs.std(0) / math.sqrt(len(mine)))
    truth = mixture_draws(2000, np.random.default_rng(4), WEIGHTS, MEANS, COVARIANCES)
    assert passes_energy_distance(x, truth)


@pytest.mark.parametrize("schedule", ["linear", "ve"])
@pytest.mark.parametrize("method", ["ddpm", "ode"])
def test_the_other_schedules_reproduce_the_mixture(schedule, method):
    settings = {"ode": {"num_steps": 100}}.get(method, {})
    x = sample(analytic("mixture", schedule), 3000, method=method, progress=False, **settings).draws["x"][0]
    assert passes_energy_distance(x, mixture_draws(2000, np.random.default_rng(5), WEIGHTS, MEANS, COVARIANCES))


@pytest.mark.parametrize("target", ["gaussian", "mixture"])
def test_log_likelihood_matches_the_true_density(target):
    rng = np.random.default_rng(6)
    if target == "gaussian":
        x = rng.multivariate_normal(MU, SIGMA, 100)
        exact = scipy.stats.multivariate_normal(MU, SIGMA).logpdf(x)
    else:
        x = mixture_draws(100, rng, WEIGHTS, MEANS, COVARIANCES)
        exact = mixture_log_density(x, WEIGHTS, MEANS, COVARIANCES)
    # Heun on 100 timesteps, exact divergence: the error is the ODE's discretisation (about 1e-3
    # nats) and the N(0, I) prior at the last timestep, where the cosine schedule leaves alpha = 5e-5
    ours = log_likelihood(analytic(target), x, progress=False)
    assert np.max(np.abs(ours - exact)) < 0.01


def test_hutchinson_log_likelihood_is_unbiased_in_high_dimension():
    dim = 20
    rng = np.random.default_rng(7)
    mean = rng.normal(size=dim)
    factor = rng.normal(size=(dim, dim)) / math.sqrt(dim)
    covariance = factor @ factor.T + 0.5 * np.eye(dim)
    schedule = Schedule.cosine(1000)
    model = DiffusionModel.from_score(mixture_score(schedule, [1.0], mean[None], covariance[None]), dim, schedule)
    x = rng.multivariate_normal(mean, covariance, 300)
    exact = scipy.stats.multivariate_normal(mean, covariance).logpdf(x)
    error = log_likelihood(model, x, rng_key=0, progress=False) - exact  # dim > 16: Hutchinson
    # one probe per point: each estimate is noisy, their mean is not biased
    assert np.std(error) > 0.05
    assert abs(np.mean(error)) < 4 * np.std(error) / math.sqrt(len(x))


def test_the_ode_sampler_gives_exact_importance_ratios():
    model = analytic("gaussian")

    def target(x):
        return scipy.stats.multivariate_normal(MU, SIGMA).logpdf(x)

    out = sample(model, 2000, method="ode", num_steps=25, target_log_prob=target, progress=False)
    log_p, log_q = out.sample_stats["log_p"], out.sample_stats["log_q"]
    assert log_p.shape == log_q.shape == (1, 2000)
    # log_q is the density of the draws through the Heun steps (exact Jacobians): with the exact
    # score it is the target up to the steps' discretisation
    assert np.std(log_p - log_q) < 0.05
    report = diagnose(out)
    assert report["pareto_khat"].status == "ok"

    def wrong(x):
        return mixture_log_density(x, WEIGHTS, MEANS, COVARIANCES)

    wrong_out = sample(model, 2000, method="ode", num_steps=25, target_log_prob=wrong, progress=False)
    assert diagnose(wrong_out)["pareto_khat"].status == "fail"


def test_inpainting_keeps_the_known_coordinates_and_langevin_corrected_samplers_get_the_conditional():
    model, v = analytic("gaussian"), 2.5
    mask, values = np.array([True, False]), np.array([v, np.nan])
    conditional_mean = MU[1] + SIGMA[1, 0] / SIGMA[0, 0] * (v - MU[0])
    conditional_var = SIGMA[1, 1] - SIGMA[1, 0] ** 2 / SIGMA[0, 0]
    n = 4000
    for method in METHODS:
        out = sample(model, 500, method=method, condition=(mask, values), progress=False)
        assert np.all(out.draws["x"][0, :, 0] == v) and out.info["conditioned"]
    # replacement alone is approximate; with Langevin steps at every level the unknown coordinate
    # is sampled from p_t(y_unknown | y_known), and the draws from the exact conditional
    for method, settings in (("langevin", {}), ("sde", {"num_steps": 200, "langevin_steps": 2})):
        x = sample(model, n, method=method, condition=(mask, values), progress=False, **settings).draws["x"][0, :, 1]
        assert abs(x.mean() - conditional_mean) < 4 * math.sqrt(conditional_var / n)
        assert abs(x.var() - conditional_var) < 4 * conditional_var * math.sqrt(2 / n)


# --------------------------------------------------------------------------------------------------------------
# reproducibility


def test_ddim_with_eta_zero_is_a_deterministic_function_of_the_start():
    model = analytic("mixture")
    out = sample(model, 300, method="ddim", num_steps=20, rng_key=11, progress=False)
    # by hand: the start is the generator's first draw; then DDIM's update on the same table
    start = torch.randn((300, 2), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    table, y = model.schedule.timesteps(20, "trailing"), start
    for i in range(table.num_steps):
        eps = model.predict_noise(y, int(table.index[i]))
        x0 = (y - table.sigma[i] * eps) / table.alpha[i]
        y = table.alpha[i + 1] * x0 + table.sigma[i + 1] * eps
    np.testing.assert_allclose(out.draws["x"][0], y.numpy(), rtol=1e-9, atol=1e-9)  # float64, other rounding
    again = sample(model, 300, method="ddim", num_steps=20, rng_key=11, progress=False)
    np.testing.assert_array_equal(out.draws["x"], again.draws["x"])
    stochastic = sample(model, 300, method="ddim", num_steps=20, eta=0.5, rng_key=11, progress=False)
    assert not np.allclose(out.draws["x"], stochastic.draws["x"])


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_draws_and_the_global_rng_is_left_alone(method):
    model = analytic("gaussian")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sample(model, 50, method=method, num_steps=10, rng_key=5, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    second = sample(model, 50, method=method, num_steps=10, rng_key=5, progress=False)
    other = sample(model, 50, method=method, num_steps=10, rng_key=6, progress=False)
    np.testing.assert_array_equal(first.draws["x"], second.draws["x"])
    assert not np.allclose(first.draws["x"], other.draws["x"])
    assert first.info["nfe"] == {"ddpm": 10, "ddim": 10, "langevin": 51, "sde": 10, "ode": 19}[method]


# --------------------------------------------------------------------------------------------------------------
# training


@pytest.fixture(scope="module")
def ring_data():
    rng = np.random.default_rng(0)
    return ring(20000, rng), ring(2000, rng), ring(2000, rng)


@pytest.fixture(scope="module")
def trained_on_ring(ring_data):
    train, _, _ = ring_data
    return train_score_model(DiffusionModel(dim=2, schedule="cosine"), train, num_steps=3000, progress=False)


@pytest.mark.parametrize(("method", "num_steps"), [("ddpm", 1000), ("ddim", 50)])
def test_a_model_trained_on_a_ring_samples_it_as_well_as_a_second_true_sample(
    trained_on_ring, ring_data, method, num_steps
):
    _, held_out, second = ring_data
    out = sample(trained_on_ring.model, 2000, method=method, num_steps=num_steps, rng_key=0, progress=False)
    x = out.draws["x"][0]
    # the threshold is the 99% quantile of the energy distance between two samples of one
    # distribution (a permutation test), so passing it is being as near as two true samples
    ours, critical = energy_distance_test(x, held_out, rng=np.random.default_rng(0), num_permutations=100)
    theirs, _ = energy_distance_test(second, held_out, rng=np.random.default_rng(0), num_permutations=1)
    assert ours <= critical and theirs <= critical
    # draws more than three standard deviations off the ring: 0.3% for the data, and for
    # a sampler whose first step divided the network's error by alpha = 5e-5, most
    assert np.mean(np.abs(np.hypot(*x.T) - 4.0) > 1.5) < 0.01


def test_training_records_its_loss_and_returns_a_new_model(trained_on_ring, ring_data):
    res = trained_on_ring
    assert res.method == "train_score_model" and res.trace["loss"].shape == (3000,)
    # the untrained network already has the N(0, I) answer (loss 1 - E sigma^2 on average over t);
    # a trained one explains the ring's modes too
    assert np.mean(res.trace["loss"][-300:]) < np.mean(res.trace["loss"][:100]) - 0.03
    assert res.model.is_trained and res.model.net is not DiffusionModel(dim=2).net
    train, _, _ = ring_data
    np.testing.assert_allclose(res.model.mean, train.mean(0))
    np.testing.assert_allclose(res.model.std, train.std(0))
    assert diagnose(res)["objective_trace"].status in ("ok", "fail")


def test_training_leaves_the_input_model_unchanged():
    model = DiffusionModel(dim=2, num_timesteps=100)
    before = copy.deepcopy(model.net.state_dict())
    res = train_score_model(model, np.random.default_rng(0).normal(size=(500, 2)), num_steps=20, progress=False)
    for name, value in model.net.state_dict().items():
        assert torch.equal(value, before[name])
    assert not model.is_trained and res.model.is_trained
    assert not torch.equal(res.model.net.state_dict()["data.weight"], before["data.weight"])


def test_ema_decay_warms_up_and_averages_the_weights(tmp_path):
    assert [ema_decay_at(n, 0.999) for n in (0, 1, 10)] == [0.1, 2 / 11, 11 / 20]
    assert ema_decay_at(100_000, 0.999) == 0.999
    model = DiffusionModel(dim=2, num_timesteps=100)
    data = np.random.default_rng(1).normal(size=(300, 2))
    res = train_score_model(model, data, num_steps=1, checkpoint=tmp_path / "one.pt", progress=False)
    np.testing.assert_array_equal(res.trace["ema_decay"], [0.1])
    state = torch.load(tmp_path / "one.pt", weights_only=True)
    # after the first step the average is 0.1 * (initial weights) + 0.9 * (weights after one step)
    for name, initial in model.net.state_dict().items():
        expected = 0.1 * initial + 0.9 * state["net"][name]
        torch.testing.assert_close(state["ema"][name], expected)
        torch.testing.assert_close(res.model.net.state_dict()[name], expected)
    long = train_score_model(model, data, num_steps=30, ema_decay=0.5, progress=False)
    np.testing.assert_allclose(long.trace["ema_decay"], [min(0.5, (1 + n) / (10 + n)) for n in range(30)])


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_run(tmp_path):
    model = DiffusionModel(dim=2, num_timesteps=100)
    data = np.random.default_rng(2).normal(size=(400, 2)) * [1.0, 3.0]
    settings = {"batch_size": 32, "rng_key": 4, "progress": False}
    whole = train_score_model(model, data, num_steps=40, **settings)
    path = tmp_path / "train.pt"
    train_score_model(model, data, num_steps=25, checkpoint=path, checkpoint_every=10, **settings)
    resumed = train_score_model(model, data, num_steps=40, resume_from=path, **settings)
    for name, value in whole.model.net.state_dict().items():
        assert torch.equal(resumed.model.net.state_dict()[name], value), name
    np.testing.assert_array_equal(resumed.trace["loss"], whole.trace["loss"])
    assert resumed.info["resumed_from_step"] == 25
    with pytest.raises(ValueError, match="resume_from: the checkpoint was written with"):
        train_score_model(model, data, num_steps=40, resume_from=path, batch_size=64, rng_key=4, progress=False)
    with pytest.raises(ValueError, match="written for other data"):
        train_score_model(model, data * 2, num_steps=40, resume_from=path, **settings)
    with pytest.raises(ValueError, match="num_steps .* must be at least the checkpoint's 25 steps"):
        train_score_model(model, data, num_steps=20, resume_from=path, **settings)


def test_the_likelihood_carries_the_normalisation_log_determinant():
    data = np.random.default_rng(3).normal(size=(2000, 2)) * [2.0, 0.5] + [1.0, -1.0]
    c = 7.0
    settings = {"num_steps": 200, "batch_size": 128, "progress": False}
    model = train_score_model(DiffusionModel(dim=2, num_timesteps=100), data, **settings).model
    scaled = train_score_model(DiffusionModel(dim=2, num_timesteps=100), c * data, **settings).model
    # the same normalised data, the same training: densities differ by the Jacobian of x -> c x
    x = data[:50]
    ours, theirs = log_likelihood(model, x, progress=False), log_likelihood(scaled, c * x, progress=False)
    np.testing.assert_allclose(theirs, ours - 2 * math.log(c), atol=1e-4)


def test_a_constant_dimension_is_centred_not_scaled_and_reported():
    data = np.c_[np.random.default_rng(5).normal(size=200), np.full(200, 3.0)]
    with pytest.warns(UserWarning, match=r"1 constant dimension\(s\) \[1\]"):
        res = train_score_model(
            DiffusionModel(dim=2, num_timesteps=10), data, num_steps=2, batch_size=8, progress=False
        )
    assert res.info["constant_dims"] == [1] and res.model.std[1] == 1.0 and res.model.mean[1] == 3.0


def test_a_non_finite_loss_stops_training_with_the_step():
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(()))

        def forward(self, y, t):
            return y * self.weight * torch.where(t[:, None] > 2.0, 1.0, math.inf)

    model = DiffusionModel(dim=2, num_timesteps=10, net=Exploding())
    data = np.random.default_rng(4).normal(size=(10, 2))
    with pytest.raises(ConvergenceError, match="non-finite at step 1 of 5"):
        train_score_model(model, data, num_steps=5, batch_size=4, progress=False)


# --------------------------------------------------------------------------------------------------------------
# diagnostics and results


def test_diagnose_warns_when_the_table_starts_where_signal_is_left():
    model = analytic("gaussian")
    leading = sample(model, 200, method="ddim", num_steps=10, spacing="leading", progress=False)
    trailing = sample(model, 200, method="ddim", num_steps=10, spacing="trailing", progress=False)
    assert diagnose(leading)["start_snr"].status == "warn"
    assert diagnose(trailing)["start_snr"].status == "ok"
    assert trailing.info["timesteps"] == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]


def test_a_sample_result_is_diagnosed_against_reference_draws_and_saves(tmp_path):
    out = sample(analytic("gaussian"), 300, method="ode", num_steps=5, progress=False)
    reference = np.random.default_rng(8).multivariate_normal(MU, SIGMA, 300)
    assert diagnose(out, reference=reference)["reference"].status == "ok"
    assert diagnose(out, reference=reference + 3.0)["reference"].status == "fail"
    loaded = Result.load(out.save(tmp_path / "out.nc"))
    np.testing.assert_array_equal(loaded.draws["x"], out.draws["x"])
    assert loaded.info["nfe"] == 9 and loaded.method == "ode"


# --------------------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_gets_errors_that_name_the_argument():
    model = analytic("gaussian")
    untrained = DiffusionModel(dim=2, num_timesteps=100)
    data = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"data must have shape \(n, 2\) for a model of dim=2, got \(10, 3\)"):
        train_score_model(untrained, np.zeros((10, 3)), progress=False)
    with pytest.raises(ValueError, match=r"data contains 1 non-finite value\(s\).*rows \[4\]"):
        train_score_model(untrained, np.where(np.arange(20).reshape(10, 2) == 9, np.nan, data), progress=False)
    with pytest.raises(ValueError, match="batch_size must be at most the 10 data points, got 256"):
        train_score_model(untrained, data, progress=False)
    with pytest.raises(TypeError, match="no network to train"):
        train_score_model(model, data, progress=False)
    with pytest.raises(ValueError, match=r"ema_decay must lie in \[0, 1\), got 1.0"):
        train_score_model(untrained, data, batch_size=5, ema_decay=1.0, progress=False)
    with pytest.raises(ValueError, match=r"num_steps must be at most the schedule's num_timesteps \(1000\), got 2000"):
        sample(model, 10, method="ddpm", num_steps=2000, progress=False)
    with pytest.raises(ValueError, match=r"method must be one of \('ddpm', 'ddim', 'langevin', 'sde', 'ode'\)"):
        sample(model, 10, method="euler", progress=False)
    with pytest.raises(ValueError, match="spacing must be one of"):
        sample(model, 10, spacing="karras", progress=False)
    with pytest.raises(ValueError, match="eta is DDIM's parameter; method 'ddpm' takes none"):
        sample(model, 10, method="ddpm", eta=0.5, progress=False)
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\], got 1.5"):
        sample(model, 10, method="ddim", eta=1.5, progress=False)
    with pytest.raises(ValueError, match="langevin_steps applies to 'langevin' and 'sde'"):
        sample(model, 10, method="ode", langevin_steps=2, progress=False)
    with pytest.raises(ValueError, match="model has not been trained"):
        sample(untrained, 10, progress=False)
    with pytest.raises(TypeError, match="rng_key must be an int seed"):
        sample(model, 10, rng_key=np.array([0, 1]), progress=False)
    with pytest.raises(TypeError, match="num_samples must be an int"):
        sample(model, 10.0, progress=False)
    with pytest.raises(ValueError, match=r"condition's mask must be a boolean array of shape \(2,\)"):
        sample(model, 10, condition=(np.array([1, 0]), np.zeros(2)), progress=False)
    with pytest.raises(ValueError, match="condition's values must be finite where the mask is True"):
        sample(model, 10, condition=(np.array([True, False]), np.array([np.nan, 0.0])), progress=False)
    with pytest.raises(ValueError, match="target_log_prob needs method='ode'"):
        sample(model, 10, method="ddim", target_log_prob=lambda x: x[:, 0], progress=False)
    with pytest.raises(ValueError, match="target_log_prob returned NaN or \\+inf for 10 of 10 draws"):
        sample(model, 10, method="ode", num_steps=2, target_log_prob=lambda x: np.full(len(x), np.nan), progress=False)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        log_likelihood(model, np.zeros(2), progress=False)
    with pytest.raises(ValueError, match="divergence must be one of"):
        log_likelihood(model, np.zeros((1, 2)), divergence="skilling", progress=False)
    with pytest.raises(TypeError, match="model must be a DiffusionModel"):
        sample("model", 10, progress=False)
