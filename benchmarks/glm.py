"""``fit_glm`` against statsmodels and scikit-learn, and the population GLM as the
recording grows, side by side in one run.

1. Poisson GLM, N=500,000 bins, p=60 covariates: ``X ~ N(0, 1) / sqrt(p)``,
   coefficients ``~ N(0, 0.5^2)``, intercept -1, ``y ~ Poisson(exp(eta))``. Ours:
   ``fit_glm(GLM("poisson"), X, y)``, which returns the maximum-likelihood estimate
   with the Laplace posterior (1000 draws and the standard errors); statsmodels:
   ``sm.GLM(..., family=Poisson()).fit()`` (IRLS, with standard errors);
   scikit-learn: ``PoissonRegressor(alpha=0, tol=1e-10, max_iter=1000)`` (L-BFGS, the
   estimate only). float64 on every side, CPU. Each side runs in a fresh process,
   timed from after the imports and the data; ours is reported as the first call
   (compilation included) and a second call with the same shapes (the compiled
   program reused). The coefficients are compared with statsmodels' (target: a
   relative difference below 1e-6), and so are our standard errors.
2. ``PopulationGLM`` of 3 coupled neurons (stimulus basis: 6 raised cosines over
   100 ms; history and coupling basis: 5 over 50 ms; 1 ms bins), simulated from a
   known truth with a white-noise stimulus for T = 50,000 to 400,000 bins, and fitted
   with ``fit_glm``. Every recording length pads to its own shape, so each is fitted
   three times: the first fit compiles, the faster of the other two is reported.
   Seconds per 100,000 bins should stay about constant (the fit is linear in T). The
   largest error of the 45 coupling weights, in units of their Laplace standard
   errors, checks the fit and its posterior against the truth.
"""

import json
import math
import multiprocessing
import os
import time

import numpy as np

N, P, INTERCEPT, SCALE = 500_000, 60, -1.0, 0.5
LENGTHS = (50_000, 100_000, 200_000, 400_000)


def _glm_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, P)) / math.sqrt(P)
    beta = rng.normal(0.0, SCALE, size=P)
    y = rng.poisson(np.exp(INTERCEPT + X @ beta)).astype(np.float64)
    return X, y


def _ours() -> dict:
    import jax

    from bayeskit.inference import fit_glm
    from bayeskit.models import GLM

    X, y = _glm_data()
    jax.devices()  # start the runtime outside the timings, as an import would
    times = []
    for _ in range(2):
        started = time.perf_counter()
        res = fit_glm(GLM("poisson"), X, y, progress=False)
        times.append(time.perf_counter() - started)
    se = res.info["standard_errors"]
    return {
        "first_call": times[0],
        "seconds": times[1],
        "coefficients": np.r_[res.params["intercept"], res.params["weights"]].tolist(),
        "standard_errors": np.r_[se["intercept"], se["weights"]].tolist(),
        "draws": list(res.draws["weights"].shape),
        "n_iter": res.info["n_iter"],
        "dtype": str(res.params["weights"].dtype),
        "jax": jax.__version__,
    }


def _statsmodels() -> dict:
    import statsmodels
    import statsmodels.api as sm

    X, y = _glm_data()
    started = time.perf_counter()
    fit = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson()).fit()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "coefficients": np.asarray(fit.params).tolist(),
        "standard_errors": np.asarray(fit.bse).tolist(),
        "n_iter": int(fit.fit_history["iteration"]),
        "dtype": str(np.asarray(fit.params).dtype),
        "statsmodels": statsmodels.__version__,
    }


def _sklearn() -> dict:
    import sklearn
    from sklearn.linear_model import PoissonRegressor

    X, y = _glm_data()
    started = time.perf_counter()
    model = PoissonRegressor(alpha=0.0, tol=1e-10, max_iter=1000).fit(X, y)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "coefficients": np.r_[model.intercept_, model.coef_].tolist(),
        "n_iter": int(model.n_iter_),
        "dtype": str(model.coef_.dtype),
        "sklearn": sklearn.__version__,
    }


def _population() -> list[dict]:
    from bayeskit.inference import fit_glm
    from bayeskit.models import PopulationGLM, bases

    pop = PopulationGLM(bases.RaisedCosine(6, 0.1, 0.001), bases.RaisedCosine(5, 0.05, 0.001))
    rng = np.random.default_rng(0)
    coupling = np.zeros((3, 3, 5))
    coupling[np.arange(3), np.arange(3)] = [-3.0, -1.0, 0.5, 0.3, 0.0]  # each neuron's own history
    coupling[0, 1] = [0.5, 0.8, 0.3, 0.0, 0.0]  # neuron 1 excites neuron 0
    coupling[2, 0] = [-0.5, -0.8, -0.3, 0.0, 0.0]  # neuron 0 inhibits neuron 2
    truth = {
        "intercept": np.log([15.0, 20.0, 25.0]),
        "stimulus_weights": rng.normal(size=(3, 1, 6)) * 0.08,
        "coupling_weights": coupling,
    }
    rows = []
    for T in LENGTHS:
        stimulus = rng.normal(size=(T, 1))
        spikes = pop.simulate(truth, stimulus, rng_key=T)
        times = []
        for _ in range(3):  # the first fit at this shape compiles; the best of the other two is reported
            started = time.perf_counter()
            res = fit_glm(pop, stimulus, spikes, progress=False)
            times.append(time.perf_counter() - started)
        z = (res.params["coupling_weights"] - coupling) / np.asarray(res.info["standard_errors"]["coupling_weights"])
        rows.append({
            "T": T,
            "first_call": times[0],
            "seconds": min(times[1:]),
            "per_100k": min(times[1:]) / (T / 100_000),
            "spikes": int(spikes.sum()),
            "n_iter": res.info["n_iter"],
            "coupling_z": float(np.max(np.abs(z))),
        })  # fmt: skip
    return rows


def _in_fresh_process(function):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function)


def _max_relative(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def main() -> None:
    ours, sm_fit, sk_fit = (_in_fresh_process(f) for f in (_ours, _statsmodels, _sklearn))
    reference = sm_fit["coefficients"]
    print(
        f"\nPoisson GLM, N={N:,}, p={P} (+ intercept), dtype float64 on every side "
        f"({ours['dtype']} / {sm_fit['dtype']} / {sk_fit['dtype']}), CPU, {os.cpu_count()} cores; "
        f"JAX {ours['jax']}, statsmodels {sm_fit['statsmodels']}, scikit-learn {sk_fit['sklearn']}"
    )
    header = f"  {'':40}{'seconds':>9}{'iters':>7}{'theirs/ours warm':>18}{'theirs/ours first':>19}"
    print(header + f"{'max rel. diff vs statsmodels':>30}  returns")
    draws = "x".join(map(str, ours["draws"][1:]))
    lines = (
        ("bayeskit fit_glm, first call (compile)", ours["first_call"], ours, f"MLE, SEs, {draws} Laplace draws"),
        ("bayeskit fit_glm, second call (warm)", ours["seconds"], ours, f"MLE, SEs, {draws} Laplace draws"),
        ("statsmodels GLM (IRLS)", sm_fit["seconds"], sm_fit, "MLE, SEs"),
        ("scikit-learn PoissonRegressor (L-BFGS)", sk_fit["seconds"], sk_fit, "MLE"),
    )
    for name, seconds, row, returns in lines:
        if row is ours:
            ratios = " " * 37
        else:
            ratios = f"{seconds / ours['seconds']:17.2f}x{seconds / ours['first_call']:18.2f}x"
        gap = "(reference)" if row is sm_fit else f"{_max_relative(row['coefficients'], reference):.1e}"
        print(f"  {name:40}{seconds:9.2f}{row['n_iter']:7d}{ratios}{gap:>30}  {returns}")
    se_gap = _max_relative(ours["standard_errors"], sm_fit["standard_errors"])
    print(f"  our standard errors against statsmodels' bse: max relative difference {se_gap:.1e}")
    print(
        f"  targets: coefficients within rtol 1e-6 of statsmodels: "
        f"{'met' if _max_relative(ours['coefficients'], reference) < 1e-6 else 'NOT met'}; "
        f">= 25x statsmodels (warm): {'met' if sm_fit['seconds'] >= 25 * ours['seconds'] else 'NOT met'}; "
        f"at least as fast as scikit-learn (warm): {'met' if sk_fit['seconds'] >= ours['seconds'] else 'NOT met'}"
    )

    population = _in_fresh_process(_population)
    print("\nPopulationGLM, 3 coupled neurons, 1 ms bins, K_s=6 (100 ms), K_h=5 (50 ms), float64, CPU")
    print(
        f"  {'T bins':>9}{'spikes':>9}{'Newton':>8}{'first fit s':>13}{'fit s (warm)':>14}"
        f"{'s per 100k bins':>17}{'max |coupling - truth| / SE':>29}"
    )
    for row in population:
        print(
            f"  {row['T']:9,}{row['spikes']:9,}{row['n_iter']:8d}{row['first_call']:13.2f}{row['seconds']:14.2f}"
            f"{row['per_100k']:17.2f}{row['coupling_z']:29.2f}"
        )
    T = np.array([row["T"] for row in population], float)
    seconds = np.array([row["seconds"] for row in population])
    slope = np.polyfit(np.log(T), np.log(seconds), 1)[0]
    print(f"  warm fit time ~ T^{slope:.2f} (1 is linear)")
    glm = {
        side: {k: v for k, v in row.items() if k not in ("coefficients", "standard_errors")}
        for side, row in (("ours", ours), ("statsmodels", sm_fit), ("sklearn", sk_fit))
    }
    print("\n" + json.dumps({"glm": glm, "population": population}))


if __name__ == "__main__":
    main()
