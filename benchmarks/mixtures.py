"""Our ``em`` against scikit-learn's ``GaussianMixture``, side by side in one run.

Full covariances, N=100,000 points in D=16 from a known K=16 mixture, float64 on
both sides, CPU, 100 iterations (tol=0, so both run all of them).

1. One fit from the same starting parameters: each point hard-assigned to the same
   centres, one M-step, handed to scikit-learn as ``weights_init`` / ``means_init`` /
   ``precisions_init``; the final log-likelihoods must agree.
2. Eight restarts: ``n_init=8`` against ``num_inits=8`` (k-means++ on each side).
3. Small data: iris, one restart against ten.

Each case runs in a fresh process, so its peak resident memory is its own. Our first
call includes compilation and is reported apart from the steady state (a second
call with data of the same shapes reuses the compiled program).
"""

import json
import multiprocessing
import resource
import time

import numpy as np

N, D, K, ITERS, RESTARTS, REG = 100_000, 16, 16, 100, 8, 1e-6


def _data():
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 3.0, size=(K, D))
    scales = rng.uniform(0.5, 1.5, size=(K, D, D)) * np.eye(D) + 0.2 * rng.normal(size=(K, D, D))
    z = rng.integers(K, size=N)
    x = centres[z] + np.einsum("nde,ne->nd", scales[z], rng.normal(size=(N, D)))
    start = x[rng.choice(N, size=K, replace=False)]
    return x, start


def _start_params(x, start):
    """What both sides start from: nearest-centre assignment and one M-step."""
    labels = np.argmin(((x[:, None, :] - start[None]) ** 2).sum(-1), axis=1)
    weights = np.bincount(labels, minlength=K) / len(x)
    means = np.stack([x[labels == k].mean(0) for k in range(K)])
    covs = np.stack([np.cov(x[labels == k].T, bias=True) + REG * np.eye(D) for k in range(K)])
    return weights, means, covs


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(case: str) -> dict:
    from bayeskit.inference import em
    from bayeskit.models import GaussianMixture, data

    if case == "iris":
        d = data.load("iris")
        x = np.column_stack([d[k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")])
        out = {}
        for inits in (1, 10):
            em(GaussianMixture(3), x, num_inits=inits, progress=False)
            started = time.perf_counter()
            res = em(GaussianMixture(3), x, num_inits=inits, progress=False)
            out[f"seconds_{inits}"] = time.perf_counter() - started
            out[f"log_likelihood_{inits}"] = res.info["log_likelihood"]
        return out
    x, start = _data()
    if case == "same_start":
        options = dict(means_init=start, max_iter=ITERS, tol=0.0, reg_covar=REG, progress=False)
        inits = 1
    else:
        options = dict(num_inits=RESTARTS, init="kmeans++", max_iter=ITERS, tol=0.0, reg_covar=REG, progress=False)
        inits = RESTARTS
    model = GaussianMixture(K)
    started = time.perf_counter()
    em(model, x, **options)
    first = time.perf_counter() - started
    started = time.perf_counter()
    res = em(model, x, **options)
    steady = time.perf_counter() - started
    return {
        "first_call": first,
        "seconds": steady,
        "per_iteration": steady / (ITERS * inits),
        "log_likelihood": res.info["log_likelihood"],
        "n_iter": res.info["n_iter"],
        "peak_mib": _peak_mib(),
    }


def _sklearn(case: str) -> dict:
    from sklearn.mixture import GaussianMixture as SklearnMixture

    if case == "iris":
        from sklearn.datasets import load_iris

        x = load_iris().data
        out = {}
        for inits in (1, 10):
            started = time.perf_counter()
            fit = SklearnMixture(3, n_init=inits, random_state=0).fit(x)
            out[f"seconds_{inits}"] = time.perf_counter() - started
            out[f"log_likelihood_{inits}"] = fit.score(x)
        return out
    x, start = _data()
    common = dict(covariance_type="full", max_iter=ITERS, tol=0.0, reg_covar=REG)
    if case == "same_start":
        weights, means, covs = _start_params(x, start)
        precisions = np.linalg.inv(covs)
        model = SklearnMixture(K, weights_init=weights, means_init=means, precisions_init=precisions, **common)
        inits = 1
    else:
        model = SklearnMixture(K, n_init=RESTARTS, init_params="k-means++", random_state=0, **common)
        inits = RESTARTS
    started = time.perf_counter()
    model.fit(x)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "per_iteration": seconds / (ITERS * inits),
        "log_likelihood": model.score(x),
        "n_iter": int(model.n_iter_),
        "peak_mib": _peak_mib(),
    }


def _run(job):
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # sklearn: "did not converge" at tol=0
    side, case = job
    return (_ours if side == "ours" else _sklearn)(case)


def _in_fresh_process(side: str, case: str) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_run, ((side, case),))


def main() -> None:
    print(f"GMM/EM: full covariance, N={N:,}, D={D}, K={K}, {ITERS} iterations, float64, CPU")
    results = {}
    for case, label in (("same_start", "one fit, same start"), ("restarts", f"{RESTARTS} restarts")):
        ours, theirs = _in_fresh_process("ours", case), _in_fresh_process("sklearn", case)
        results[case] = {"ours": ours, "sklearn": theirs}
        print(f"\n{label}")
        print(f"  {'':10} {'s/iteration':>12} {'total s':>9} {'log-lik/sample':>15} {'peak MiB':>9}")
        for name, row in (("sklearn", theirs), ("bayeskit", ours)):
            print(
                f"  {name:10} {row['per_iteration']:12.4f} {row['seconds']:9.2f} "
                f"{row['log_likelihood']:15.8f} {row['peak_mib']:9.0f}"
            )
        print(f"  speed-up per iteration: {theirs['per_iteration'] / ours['per_iteration']:.1f}x")
        print(f"  our first call (with compilation): {ours['first_call']:.2f} s")
        gap = ours["log_likelihood"] - theirs["log_likelihood"]
        print(f"  log-likelihood, ours minus sklearn's: {gap:.2e}")
    ours, theirs = _in_fresh_process("ours", "iris"), _in_fresh_process("sklearn", "iris")
    results["iris"] = {"ours": ours, "sklearn": theirs}
    print("\niris (K=3, full), steady state")
    for name, row in (("sklearn", theirs), ("bayeskit", ours)):
        print(
            f"  {name:10} 1 restart {row['seconds_1'] * 1e3:7.1f} ms   10 restarts {row['seconds_10'] * 1e3:7.1f} ms"
            f"   best log-lik {row['log_likelihood_10']:.6f}"
        )
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
