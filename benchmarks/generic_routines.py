"""Our ``svi`` and ``nuts`` against calling NumPyro directly, on one model, in one run.

Bayesian linear regression with known noise, N=1000, D=10, float64 on both sides.
NUTS: 4 chains run sequentially, 500 warm-up and 1000 kept draws each; the first call
includes compilation, the second (NumPyro's MCMC object re-run, our routine called
again) is reported as steady state. SVI: NumPyro's ``AutoMultivariateNormal`` with a
constant Adam step 1e-2 against ``svi(guide="mvn")``, 5000 steps each, and the
distance of each answer from the closed-form posterior; NumPyro is timed alone and
with what our Result also holds (1000 draws and the pointwise log-likelihood).
"""

import time

import jax
import numpy as np
import optax
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal
from numpyro.infer.util import log_likelihood

from bayeskit.inference import nuts, svi
from bayeskit.inference._checks import _arviz
from bayeskit.models import examples

N, D, CHAINS, WARMUP, SAMPLES, STEPS = 1000, 10, 4, 500, 1000, 5000


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D))
    y = X @ rng.normal(size=D) + rng.normal(size=N)
    return X, y, *examples.linear_regression_posterior(X, y)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _min_ess(draws):
    az = _arviz()
    return float(az.ess(az.convert_to_dataset({"w": np.asarray(draws)}), method="bulk")["w"].min())


def bench_nuts(X, y):
    mcmc = MCMC(
        NUTS(examples.linear_regression),
        num_warmup=WARMUP,
        num_samples=SAMPLES,
        num_chains=CHAINS,
        chain_method="sequential",
        progress_bar=False,
    )
    rows = []
    for label in ("first call (with compile)", "steady state"):
        _, seconds = _timed(lambda: mcmc.run(jax.random.PRNGKey(1), X, y=y))
        jax.block_until_ready(mcmc.get_samples())
        ess = _min_ess(mcmc.get_samples(group_by_chain=True)["w"])
        rows.append(("NumPyro MCMC(NUTS)", label, seconds, ess))
    for label in ("first call (with compile)", "steady state"):
        res, seconds = _timed(
            lambda: nuts(
                examples.linear_regression,
                X,
                y=y,
                num_warmup=WARMUP,
                num_samples=SAMPLES,
                num_chains=CHAINS,
                rng_key=1,
                progress=False,
            )
        )
        rows.append(("bayeskit nuts", label, seconds, _min_ess(res.draws["w"])))
    print(f"\nNUTS, Bayesian linear regression N={N} D={D}, float64, {CHAINS} chains x ({WARMUP} + {SAMPLES})")
    print(f"{'':24}{'call':28}{'wall s':>8}{'min ESS':>10}{'ESS/s':>9}")
    for name, label, seconds, ess in rows:
        print(f"{name:24}{label:28}{seconds:8.2f}{ess:10.0f}{ess / seconds:9.0f}")
    for i, label in enumerate(("first call", "steady state")):
        theirs, ours = rows[i], rows[i + 2]
        print(
            f"ratio bayeskit/NumPyro, {label}: wall {ours[2] / theirs[2]:.2f}, "
            f"ESS/s {(ours[3] / ours[2]) / (theirs[3] / theirs[2]):.2f}"
        )


def bench_svi(X, y, mean, cov):
    sd = np.sqrt(np.diag(cov))

    def numpyro_svi(with_draws):
        guide = AutoMultivariateNormal(examples.linear_regression)
        engine = SVI(examples.linear_regression, guide, optax.adam(1e-2), Trace_ELBO())
        result = engine.run(jax.random.PRNGKey(0), STEPS, X, y=y, progress_bar=False)
        jax.block_until_ready(result.params)
        if with_draws:  # what our Result also holds: draws and the pointwise log-likelihood
            draws = guide.sample_posterior(jax.random.PRNGKey(1), result.params, sample_shape=(1000,))
            jax.block_until_ready(log_likelihood(examples.linear_regression, draws, X, y=y))
        tril = result.params["auto_scale_tril"]
        return np.asarray(result.params["auto_loc"]), np.sqrt(np.diag(np.asarray(tril @ tril.T)))

    def bayeskit_svi():
        res = svi(examples.linear_regression, X, y=y, guide="mvn", num_steps=STEPS, progress=False)
        draws = res.draws["w"].reshape(-1, D)
        return np.asarray(res.info["guide_params"]["loc"]), draws.std(0)

    runs = {
        "NumPyro SVI.run": lambda: numpyro_svi(False),
        "NumPyro SVI.run + draws + loglik": lambda: numpyro_svi(True),
        "bayeskit svi": bayeskit_svi,
    }
    print(f"\nSVI, full-rank Gaussian, {STEPS} steps, same model; NumPyro with a constant Adam step 1e-2")
    print(f"{'':34}{'wall s':>8}{'max |mean err|/sd':>20}{'max |sd/sd* - 1|':>19}")
    times = {}
    for name, fn in runs.items():
        _timed(fn)  # first call, with compilation
        (loc, q_sd), times[name] = _timed(fn)
        print(
            f"{name:34}{times[name]:8.2f}{np.max(np.abs(loc - mean) / sd):20.3f}{np.max(np.abs(q_sd / sd - 1)):19.3f}"
        )
    for name in ("NumPyro SVI.run", "NumPyro SVI.run + draws + loglik"):
        print(f"ratio bayeskit/({name}), wall of a second call: {times['bayeskit svi'] / times[name]:.2f}")


def main():
    X, y, mean, cov = _data()
    print(f"dtype: {jax.numpy.asarray(1.0).dtype} on both sides; JAX {jax.__version__}, device {jax.devices()[0]}")
    bench_nuts(X, y)
    bench_svi(X, y, mean, cov)


if __name__ == "__main__":
    main()
