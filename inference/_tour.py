"""The tour: every pair on embedded data, each written as a diagnostic report.

``python -m bayeskit.inference tour`` (what ``make demo`` runs) writes
``reports/<pair>.html`` and ``reports/index.html``. Each entry of ``TOUR`` is a
pair name, a one-line description, and a function of ``quick`` (smaller settings
for CI) returning the Result to diagnose, or the Result and reference draws to
judge it against.
"""

import dataclasses
import html
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bayeskit.graphs import examples as graph_examples
from bayeskit.models import GaussianMixture, GaussianProcess, data, examples, kernels

from ._bayes_opt import bayes_opt
from ._belief_propagation import belief_propagation
from ._diagnostics import diagnose
from ._em import em, online_em, select_n_components
from ._glm_fit import fit_glm
from ._gp_fit import fit_gp
from ._laplace import laplace
from ._nuts import nuts
from ._predictive import predictive
from ._svi import svi


class Stop(NamedTuple):
    pair: str
    description: str
    run: Callable[[bool], object]


def _with_predictive(res, *inputs):
    """Attach posterior predictive draws so the report carries a predictive check."""
    return dataclasses.replace(res, posterior_predictive=predictive(res, *inputs, num_samples=200))


def _eight_schools(routine):
    def run(quick):
        d = data.load("eight_schools")
        sigma, y = d["sigma"].astype(float), d["y"].astype(float)
        return _with_predictive(routine(examples.eight_schools_noncentered, sigma, y=y, quick=quick), sigma)

    return run


def _kidiq(routine):
    def run(quick):
        d = data.load("kidiq")
        inputs = d["mom_iq"].astype(float), d["mom_hs"].astype(float)
        res = routine(examples.kidiq_regression, *inputs, kid_score=d["kid_score"].astype(float), quick=quick)
        return _with_predictive(res, *inputs)

    return run


def _laplace(model, *args, quick, **kwargs):
    return laplace(model, *args, num_samples=1000, progress=False, **kwargs)


def _svi(model, *args, quick, **kwargs):
    return svi(model, *args, guide="mvn", num_steps=2000 if quick else 10000, progress=False, **kwargs)


def _nuts(model, *args, quick, **kwargs):
    size = 500 if quick else 1000
    return nuts(model, *args, num_warmup=size, num_samples=size, num_chains=4, progress=False, **kwargs)


TOUR: list[Stop] = [
    Stop(f"{dataset}_{name}", f"{label} on {title}", runner(routine))
    for dataset, title, runner in (
        ("eight_schools", "eight schools (non-centred)", _eight_schools),
        ("kidiq", "the kidiq regression (434 children)", _kidiq),
    )
    for name, label, routine in (
        ("laplace", "Laplace approximation", _laplace),
        ("svi", "SVI, full-rank Gaussian", _svi),
        ("nuts", "NUTS, 4 chains", _nuts),
    )
]


def _iris():
    d = data.load("iris")
    return np.column_stack([d[k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")])


def _iris_stream():
    """50,000 points from the mixture EM fits to iris: data seen in batches, as a stream would be."""
    fit = em(GaussianMixture(3), _iris(), num_inits=10, progress=False)
    return fit.model.sample(fit.params, 50_000, rng_key=1)


def _old_faithful():
    """Eruption length and waiting time, standardised (the mixture program's priors assume it)."""
    d = data.load("old_faithful")
    x = np.column_stack([d["eruptions"], d["waiting"]]).astype(float)
    return (x - x.mean(0)) / x.std(0)


def _mixture_nuts(x):
    """NUTS on the K=2 mixture program, chains started at EM's fit: started at random,
    warm-up can strand a chain in a mode with an empty component."""
    gmm = GaussianMixture(2)
    start = gmm.program_values(em(gmm, x, num_inits=5, progress=False).params)
    return nuts(gmm, x, num_warmup=500, num_samples=500, num_chains=2, init_values=start, progress=False)


TOUR += [
    Stop(
        "old_faithful_em",
        "Gaussian mixture by EM on Old Faithful, K chosen by BIC from 1 to 6",
        lambda quick: select_n_components(_old_faithful(), range(1, 7), num_inits=5, progress=False),
    ),
    Stop(
        "old_faithful_nuts",
        "Bayesian Gaussian mixture (K=2) on Old Faithful by NUTS, 2 chains started at the EM fit",
        lambda quick: _mixture_nuts(_old_faithful()),
    ),
    Stop(
        "iris_em",
        "Gaussian mixture (K=3, full) by EM on iris, 10 restarts",
        lambda quick: em(GaussianMixture(3), _iris(), num_inits=10, progress=False),
    ),
    Stop(
        "iris_stream_online_em",
        "online EM on a stream of 50,000 points drawn from the iris fit, batches of 500",
        lambda quick: online_em(GaussianMixture(3), _iris_stream(), batch_size=500, num_epochs=2, progress=False),
    ),
]


def _mauna_loa(quick):
    """Monthly CO2 at Mauna Loa with a trend + seasonal + irregular + noise kernel
    (Rasmussen & Williams 2006, section 5.4.3), on years since 1958 and ppm about the mean."""
    d = data.load("mauna_loa_co2")
    step = 3 if quick else 1
    t, co2 = d["year"][::step] - 1958.0, d["co2"][::step]
    kernel = (
        kernels.RBF(50.0, 2000.0)
        + kernels.RBF(100.0, 4.0) * kernels.Periodic(1.0, 1.0, 1.0)
        + kernels.Matern32(1.0, 0.5)
    )
    gp = GaussianProcess(kernel, noise_variance=0.05, mean=float(co2.mean()))
    return fit_gp(gp, t, co2, num_restarts=3, fixed=("kernel.left.right.right.period", "mean"), progress=False)


TOUR += [
    Stop(
        "mauna_loa_gp",
        "GP with a composite kernel on the Mauna Loa CO2 record, type-II maximum likelihood",
        _mauna_loa,
    ),
    Stop(
        "branin_bayes_opt",
        "Bayesian optimisation of the Branin function, 40 evaluations, log EI",
        lambda quick: bayes_opt(examples.branin, examples.BRANIN_BOUNDS, num_iterations=35, progress=False),
    ),
]


def _retina(quick):
    sim = examples.retinal_population(60_000 if quick else 300_000)
    return fit_glm(sim.model, sim.stimulus, sim.spikes, progress=False)


TOUR += [
    Stop(
        "retina_population_glm",
        "coupled Poisson GLM (Pillow et al. 2008) of three simulated retinal neurons with known filters",
        _retina,
    ),
]


# a patient with dyspnoea, back from Asia; a clear X-ray
_ASIA_EVIDENCE = {"dysp": "yes", "asia": "yes", "xray": "no"}
# an ALARM patient with a high heart rate, low blood pressure and low expired CO2
_ALARM_EVIDENCE = {"HRBP": "HIGH", "BP": "LOW", "EXPCO2": "LOW"}


def _denoising(quick):
    problem = graph_examples.denoising_problem(32 if quick else 64, flip=0.1, coupling=1.0)
    return belief_propagation(problem.graph, kind="max", damping=0.5, progress=False)


TOUR += [
    Stop(
        "asia_belief_propagation",
        "loopy sum-product on ASIA (Lauritzen & Spiegelhalter 1988) with evidence, against the junction tree",
        lambda quick: belief_propagation(graph_examples.load_network("asia"), _ASIA_EVIDENCE, progress=False),
    ),
    Stop(
        "alarm_belief_propagation",
        "loopy sum-product on ALARM (37 variables) with evidence, against the exact junction tree",
        lambda quick: belief_propagation(graph_examples.load_network("alarm"), _ALARM_EVIDENCE, progress=False),
    ),
    Stop(
        "ising_denoising_max_product",
        "binary image denoising: max-product MAP of an Ising posterior on a grid, damping 0.5",
        _denoising,
    ),
]


def _diabetes():
    """The diabetes table standardised: ten baseline measurements and disease progression."""
    d = data.load("diabetes")
    X = np.column_stack([d[k] for k in ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")]).astype(float)
    y = d["progression"].astype(float)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


def _bnn_sgld(dataset, network, quick):
    from bayeskit.models import BayesianMLP

    from ._sgmcmc import sgld

    X, y = dataset()
    size = 200 if quick else 500
    return sgld(BayesianMLP(**network), X, y, num_samples=size, num_chains=4, thinning=10, progress=False)


def _digits():
    d = data.load("digits")
    return d["images"].reshape(-1, 64) / 16.0, d["target"]


TOUR += [
    Stop(
        "diabetes_bnn_sgld",
        "Bayesian MLP (10-50-1) on the diabetes table by SGLD, 4 chains, Robbins–Monro steps",
        lambda quick: _bnn_sgld(_diabetes, dict(in_features=10, hidden=(50,)), quick),
    ),
    Stop(
        "digits_bnn_sgld",
        "Bayesian MLP classifier (64-50-10, prior scale 3) of the 8x8 digits by SGLD, 4 chains",
        lambda quick: _bnn_sgld(
            _digits,
            dict(in_features=64, hidden=(50,), out_features=10, likelihood="categorical", prior_scale=3.0),
            quick,
        ),
    ),
]


def _ring(n: int, seed: int) -> np.ndarray:
    """The 8-Gaussian ring: radius 4, component sd 0.5."""
    rng = np.random.default_rng(seed)
    angle = 2 * np.pi * rng.integers(0, 8, n) / 8
    return np.c_[4.0 * np.cos(angle), 4.0 * np.sin(angle)] + 0.5 * rng.normal(size=(n, 2))


def _diffusion(data, held_out, dim, num_steps, net=None):
    """Train a diffusion model, draw by DDIM-50, and judge the draws against held-out data."""
    from bayeskit.models import DiffusionModel

    from ._diffusion import sample, train_score_model

    trained = train_score_model(DiffusionModel(dim, net=net), data, num_steps=num_steps, progress=False).model
    return sample(trained, num_samples=len(held_out), method="ddim", num_steps=50, progress=False), held_out


def _digits_diffusion(quick):
    from bayeskit.models._diffusion import ConvDenoiser

    images = _digits()[0]
    return _diffusion(images[:1500], images[1500:], 64, 2000 if quick else 10_000, net=ConvDenoiser((8, 8)))


TOUR += [
    Stop(
        "ring_diffusion_ddim",
        "diffusion model (MLP 3x128, cosine schedule) trained on an 8-Gaussian ring, DDIM-50 against held-out data",
        lambda quick: _diffusion(_ring(20_000, 0), _ring(2000, 1), 2, 1500 if quick else 5000),
    ),
    Stop(
        "digits_diffusion_ddim",
        "diffusion model (small conv net) trained on 1,500 8x8 digits, DDIM-50 against the 297 held out",
        _digits_diffusion,
    ),
]


def run_tour(out_dir="reports", *, quick: bool = False, only: str | None = None) -> list[tuple]:
    """Run every stop of the tour, write its report, and return (pair, ok, seconds) rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for stop in TOUR:
        if only and only not in stop.pair:
            continue
        start = time.perf_counter()
        outcome = stop.run(quick)
        res, reference = outcome if isinstance(outcome, tuple) else (outcome, None)
        report = diagnose(res, reference=reference)
        seconds = time.perf_counter() - start
        report.to_html(out / f"{stop.pair}.html", title=f"{stop.pair}: {stop.description}")
        print(f"{stop.pair:<28} {'ok' if report.ok else 'flagged':<8} {seconds:6.1f}s  {stop.description}")
        rows.append((stop, report.ok, seconds))
    _write_index(out, rows)
    return rows


def _write_index(out: Path, rows) -> None:
    items = "".join(
        f"<tr><td><a href='{s.pair}.html'>{s.pair}</a></td><td>{html.escape(s.description)}</td>"
        f"<td>{'ok' if ok else 'checks failed'}</td><td>{seconds:.1f}s</td></tr>"
        for s, ok, seconds in rows
    )
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>bayeskit tour</title></head><body>"
        "<h1>bayeskit tour</h1><table border='1' style='border-collapse:collapse'>"
        "<tr><th>pair</th><th>what</th><th>diagnostics</th><th>time</th></tr>"
        f"{items}</table></body></html>"
    )
