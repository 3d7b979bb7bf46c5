"""Noise schedules, the timestep table and the diffusion model value, against hand-computed numbers."""

import math

import numpy as np
import pytest
import torch

from bayeskit.models._diffusion import ConvDenoiser, DiffusionModel, MLPDenoiser, Schedule


@pytest.mark.parametrize(
    ("T", "n", "spacing", "expected"),
    [
        (1000, 10, "linspace", [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
        (1000, 10, "leading", [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
        (1000, 10, "trailing", [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
        # T not a multiple of n: linspace(0, 9, 3) = [0, 4.5, 9] rounds half to even;
        # leading steps by 10 // 3 = 3; trailing is round(10 - [0, 3.33, 6.67]) - 1
        (10, 3, "linspace", [9, 4, 0]),
        (10, 3, "leading", [6, 3, 0]),
        (10, 3, "trailing", [9, 6, 2]),
        (10, 10, "trailing", list(range(9, -1, -1))),
        (10, 1, "trailing", [9]),
    ],
)
def test_spacings_match_hand_computed_tables(T, n, spacing, expected):
    table = Schedule.linear(T).timesteps(n, spacing)
    assert table.index.tolist() == expected


@pytest.mark.parametrize("kind", ["linear", "cosine", "ve"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_every_step_goes_to_the_next_entry_and_the_last_to_the_clean_end(kind, spacing):
    schedule = Schedule.named(kind, 1000)
    for n in (1, 7, 50, 333, 1000):
        table = schedule.timesteps(n, spacing)
        assert table.num_steps == n and np.all(np.diff(table.index) < 0)
        # entry i holds timestep index[i]'s coefficients; entry n is t = 0, alpha_bar = 1
        np.testing.assert_array_equal(table.alpha[:-1], schedule.alpha[table.index])
        np.testing.assert_array_equal(table.sigma[:-1], schedule.sigma[table.index])
        assert (table.t[-1], table.alpha[-1], table.sigma[-1], table.scale[-1]) == (0.0, 1.0, 0.0, 1.0)
        assert np.all(np.diff(table.sigma) < 0) and np.all(np.diff(table.alpha) > 0)


def test_ddim_previous_timesteps_of_leading_and_trailing_tables():
    # the pairs a DDIM step walks: 'leading' ends 20 -> 0 -> clean, 'trailing' 39 -> 19 -> clean
    leading = Schedule.cosine(1000).timesteps(50, "leading")
    assert leading.index[:3].tolist() == [980, 960, 940] and leading.index[-2:].tolist() == [20, 0]
    trailing = Schedule.cosine(1000).timesteps(50, "trailing")
    assert trailing.index[:3].tolist() == [999, 979, 959] and trailing.index[-2:].tolist() == [39, 19]
    assert trailing.t[-2:].tolist() == [0.02, 0.0]


def test_linear_schedule_is_ho_et_al_betas_to_second_order():
    schedule = Schedule.linear(1000)
    betas = np.linspace(1e-4, 0.02, 1000)
    log_alpha_bar_ddpm = np.cumsum(np.log1p(-betas))
    log_alpha_bar = 2 * np.log(schedule.alpha)
    # half-way: integral of beta(t) = 0.1 * 0.5 + 0.5 * 19.9 * 0.25 = 2.5375
    assert log_alpha_bar[499] == pytest.approx(-2.5375, abs=1e-12)
    # the discrete chain differs by sum(beta^2)/2 and by its Riemann sum: 0.006 nats of log alpha_bar
    # half-way, 0.068 at the end, where alpha_bar is 4e-5 either way
    difference = np.abs(log_alpha_bar - log_alpha_bar_ddpm)
    assert np.max(difference[:500]) < 0.007 and np.max(difference) < 0.07


def test_cosine_schedule_is_nichol_and_dhariwal_with_the_last_beta_clipped():
    schedule = Schedule.cosine(1000)

    def f(t):
        return math.cos(math.pi / 2 * (t + 0.008) / 1.008) ** 2

    assert schedule.alpha[499] ** 2 == pytest.approx(f(0.5) / f(0.0), rel=1e-12)
    assert schedule.alpha[998] ** 2 == pytest.approx(f(0.999) / f(0.0), rel=1e-9)
    # f(1) = 0: the last beta would be 1; clipped at 0.999 it leaves a thousandth of the signal variance
    assert schedule.alpha[999] ** 2 == pytest.approx(0.001 * schedule.alpha[998] ** 2, rel=1e-9)


def test_ve_schedule_in_its_own_units_and_in_vp_form():
    schedule = Schedule.ve(1000, sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([0.001, 0.5, 1.0], dtype=torch.float64)
    alpha, sigma = schedule.marginal(t)
    np.testing.assert_allclose(alpha.numpy(), 1.0)
    np.testing.assert_allclose(sigma.numpy(), 0.01 * 5000.0 ** t.numpy(), rtol=1e-12)
    # the VP form is the same process divided by sqrt(1 + sigma^2)
    np.testing.assert_allclose(schedule.alpha * schedule.scale, 1.0, rtol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "cosine", "ve"])
def test_vp_form_preserves_variance(kind):
    schedule = Schedule.named(kind, 500)
    np.testing.assert_allclose(schedule.alpha**2 + schedule.sigma**2, 1.0, rtol=1e-12)
    assert np.all(np.diff(schedule.sigma) > 0)
    np.testing.assert_array_equal(schedule.index_of(schedule.t), np.arange(500))


def test_schedule_and_table_errors_name_the_argument():
    schedule = Schedule.cosine(100)
    with pytest.raises(ValueError, match=r"num_steps must be at most the schedule's num_timesteps \(100\), got 101"):
        schedule.timesteps(101)
    with pytest.raises(ValueError, match="spacing must be one of"):
        schedule.timesteps(10, "uniform")
    with pytest.raises(TypeError, match="num_steps must be an int"):
        schedule.timesteps(10.0)
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        schedule.timesteps(0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        Schedule.named("sigmoid")
    with pytest.raises(ValueError, match="t must be on the schedule's grid"):
        schedule.marginal(torch.tensor([0.0055]))
    with pytest.raises(ValueError, match="beta_max must exceed beta_min"):
        Schedule.linear(10, beta_min=1.0, beta_max=0.5)


def test_an_untrained_default_network_is_the_exact_model_of_standard_normal_data():
    # the skip sigma * y with a zero output layer: E[eps | y] for x0 ~ N(0, I) under VP
    model = DiffusionModel(dim=3, schedule="cosine", num_timesteps=1000)
    assert isinstance(model.net, MLPDenoiser) and not model.is_trained
    y = torch.randn(5, 3)
    for k in (0, 500, 999):
        expected = float(model.schedule.sigma[k]) * y
        torch.testing.assert_close(model.predict_noise(y, k), expected)


def test_from_score_converts_the_score_in_the_schedules_own_units():
    # data ~ N(0, I): VP p_t = N(0, I), VE p_t = N(0, (1 + sigma^2) I); both give eps = sigma_vp * y
    vp = DiffusionModel.from_score(lambda x, t: -x, dim=2, schedule="linear")
    ve_schedule = Schedule.ve(1000)

    def ve_score(x, t):
        _, sigma = ve_schedule.marginal(t)
        return -x / (1 + sigma[:, None] ** 2)

    ve = DiffusionModel.from_score(ve_score, dim=2, schedule=ve_schedule)
    y = torch.randn(4, 2, dtype=torch.float64)
    for model in (vp, ve):
        assert model.is_trained and model.dtype == torch.float64 and model.net is None
        for k in (0, 321, 999):
            torch.testing.assert_close(model.predict_noise(y, k), float(model.schedule.sigma[k]) * y)


def test_conv_denoiser_on_flattened_images_is_bound_to_the_models_schedule():
    net = ConvDenoiser((8, 8))
    model = DiffusionModel(dim=64, schedule="cosine", net=net)
    y, t = torch.randn(6, 64), torch.full((6,), 0.5)
    torch.testing.assert_close(model.predict_noise(y, 10), float(model.schedule.sigma[10]) * y)
    # the model binds a copy: the network given stays unbound, and says so if used alone
    assert model.net is not net and net.coefficients is None
    with pytest.raises(RuntimeError, match="use it in a DiffusionModel, or call bound_to"):
        net(y, t)
    assert ConvDenoiser((8, 8), precondition=False)(y, t).shape == (6, 64)


def test_normalisation_and_its_log_determinant():
    model = DiffusionModel(dim=2).replace(net=MLPDenoiser(2), mean=np.array([1.0, -1.0]), std=np.array([2.0, 0.5]))
    x = np.array([[3.0, 0.0]])
    np.testing.assert_allclose(model.normalized(x), [[1.0, 2.0]])
    np.testing.assert_allclose(model.denormalized(model.normalized(x)), x)
    assert model.log_det_normalization() == pytest.approx(-math.log(2.0) - math.log(0.5))
    assert model.is_trained


def test_model_errors_name_the_argument():
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        DiffusionModel(dim=0)
    with pytest.raises(TypeError, match="dim must be an int"):
        DiffusionModel(dim=2.0)
    with pytest.raises(TypeError, match="net must be a torch.nn.Module"):
        DiffusionModel(dim=2, net=lambda y, t: y)
    with pytest.raises(ValueError, match=r"num_timesteps \(500\) must match the Schedule's \(1000\)"):
        DiffusionModel(dim=2, schedule=Schedule.cosine(1000), num_timesteps=500)
    with pytest.raises(ValueError, match="net maps 64-dimensional points, the model has dim=2"):
        DiffusionModel(dim=2, net=ConvDenoiser((8, 8)))
    with pytest.raises(ValueError, match="net is preconditioned for another schedule"):
        DiffusionModel(dim=2, schedule="linear", net=MLPDenoiser(2).bound_to(Schedule.cosine()))
    with pytest.raises(TypeError, match="score_fn must be a callable"):
        DiffusionModel.from_score(None, dim=2)

    class Wrong(torch.nn.Module):
        def forward(self, y, t):
            return y[:, :1]

    with pytest.raises(ValueError, match=r"net must return a tensor of shape \(3, 2\).*got \(3, 1\)"):
        DiffusionModel(dim=2, net=Wrong()).predict_noise(torch.zeros(3, 2), 0)


def test_repr_says_what_the_model_is():
    assert repr(DiffusionModel(2, "ve", 100)) == (
        "DiffusionModel(dim=2, schedule='ve', num_timesteps=100, net=MLPDenoiser, untrained)"
    )
    assert "score_fn, analytic" in repr(DiffusionModel.from_score(lambda x, t: -x, 2))
