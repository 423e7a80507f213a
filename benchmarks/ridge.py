"""Benchmark: scalenc's p-space cross-validated ridge vs himalaya and a naive solver.

Cases (``--case``):

- ``cpu``: n=6,000 TRs, p=768, v=8,000 voxels, 10 alphas, 5 folds, the same data and
  folds for all three solvers: scalenc (numpy, float32), himalaya ``RidgeCV`` (numpy
  backend, float32, same alphas: both use the ``alpha ||w||^2`` convention) and a naive
  solve (``np.linalg.solve`` per fold and alpha, float64). Reports seconds, speedup,
  agreement of the chosen alphas and the largest relative coefficient difference from a
  float64 closed-form refit with each voxel's chosen alpha.
- ``cluster``: the same problem with Y as a voxel-chunked dask array on a
  ``distributed.LocalCluster`` of 1 and of 2 single-threaded worker processes.
- ``lebel``: LeBel scale, n=28,000, p=3,072, v=95,556 (synthetic), Y written to a zarr
  store and solved out of core from it in voxel blocks; reports time, peak RSS and the
  FP32 FLOP count (the roofline numerator).

Prints markdown tables; ``--record`` appends them to ``benchmarks/RESULTS.md``.

    python benchmarks/ridge.py --case cpu --record
    python benchmarks/ridge.py --case lebel --voxels 95556 --record
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import emit, machine, peak_rss_bytes  # noqa: E402


def make_problem(n, p, v, seed=0, dtype=np.float32):
    """Correlated features, voxels with a spread of SNRs (so chosen alphas vary)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((p, p)) / np.sqrt(p)
    X = (rng.standard_normal((n, p)) @ (np.eye(p) + 0.5 * mix)).astype(dtype)
    W = rng.standard_normal((p, v)).astype(dtype) / np.sqrt(p)
    snr = np.exp(rng.uniform(np.log(0.01), np.log(2.0), v)).astype(dtype)
    Y = X @ (W * np.sqrt(snr))
    Y += rng.standard_normal((n, v)).astype(dtype)
    return X, Y


def kfold(n, k):
    tests = np.array_split(np.arange(n), k)
    return [(np.setdiff1d(np.arange(n), t), t) for t in tests]


def naive_cv(X, Y, alphas, folds):
    """Per fold and alpha: np.linalg.solve of the centred normal equations, predictions, r."""
    X = X.astype(np.float64)
    S = np.zeros((len(alphas), Y.shape[1]))
    for tr, te in folds:
        mx, my = X[tr].mean(0), Y[tr].mean(0)
        Xc = X[tr] - mx
        G = Xc.T @ Xc
        C = Xc.T @ (Y[tr] - my)
        Xt = X[te] - mx
        yt = Y[te] - Y[te].mean(0)
        for i, a in enumerate(alphas):
            Wa = np.linalg.solve(G + a * np.eye(G.shape[0]), C)
            P = Xt @ Wa
            P -= P.mean(0)
            S[i] += (yt * P).sum(0) / np.sqrt((yt * yt).sum(0) * (P * P).sum(0)) / len(folds)
    return S.argmax(0)


def rel_coef_error(coef, X, Y, alphas_per_voxel):
    from scalenc.ridge import ridge_closed_form

    W, _ = ridge_closed_form(X, Y, alphas_per_voxel)
    return float(np.abs(coef - W).max() / np.abs(W).max())


def case_cpu(args) -> str:
    from scalenc.ridge import solve_ridge_cv

    n, p, v, K = args.n, args.p, args.voxels, 5
    alphas = np.logspace(0, 5, 10)
    X, Y = make_problem(n, p, v)
    folds = kfold(n, K)
    rows = []
    t = time.perf_counter()
    res = solve_ridge_cv(X, Y, alphas, folds, dtype="float32")
    t_sc = time.perf_counter() - t
    err_sc = rel_coef_error(res.coef, X, Y, res.best_alphas)
    rows.append(("scalenc p-space (numpy, float32)", t_sc, 1.0, err_sc))
    t_hi = None
    try:
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV as HRidgeCV
        from himalaya.scoring import correlation_score

        set_backend("numpy")
        t = time.perf_counter()
        # same metric as scalenc's default (held-out Pearson r; himalaya's default is R^2)
        h = HRidgeCV(alphas=alphas, cv=folds, fit_intercept=True,
                     solver_params=dict(score_func=correlation_score)).fit(X, Y)
        t_hi = time.perf_counter() - t
        h_idx = np.searchsorted(alphas, np.asarray(h.best_alphas_, np.float64) * (1 + 1e-6)) - 1
        agree_h = float(np.mean(h_idx == res.best_alpha_index))
        err_h = rel_coef_error(np.asarray(h.coef_), X, Y, alphas[h_idx])
        d_h = float(np.abs(np.asarray(h.coef_) - res.coef).max() / np.abs(res.coef).max())
        rows.append(("himalaya RidgeCV (numpy, float32)", t_hi, t_hi / t_sc, err_h))
    except ImportError:
        agree_h = d_h = float("nan")
    t = time.perf_counter()
    naive_idx = naive_cv(X, Y, alphas, folds)
    t_nv = time.perf_counter() - t
    agree_n = float(np.mean(naive_idx == res.best_alpha_index))
    rows.append(("naive per-alpha solve (float64)", t_nv, t_nv / t_sc, float("nan")))
    lines = [f"### ridge CV, CPU: n={n}, p={p}, v={v}, {alphas.size} alphas, {K} folds, "
             f"{datetime.date.today().isoformat()}", "", f"machine: {machine()}", "",
             "| solver | seconds | time / scalenc | max rel. coef. diff vs float64 closed form |",
             "|---|---:|---:|---:|"]
    for name, sec, ratio, err in rows:
        lines.append(f"| {name} | {sec:.1f} | {ratio:.2f} | {'' if np.isnan(err) else f'{err:.1e}'} |")
    lines += ["", f"chosen alpha equal to himalaya's on {100 * agree_h:.2f} % of voxels, to the naive "
                  f"solver's on {100 * agree_n:.2f} %; distinct alphas chosen: {len(np.unique(res.best_alphas))}; "
                  f"speedup over himalaya: {(t_hi or float('nan')) / t_sc:.1f}x; "
                  f"max rel. coef. difference scalenc vs himalaya: {d_h:.1e}", ""]
    return "\n".join(lines)


def case_cluster(args) -> str:
    import dask.array as da
    from distributed import Client, LocalCluster

    from scalenc.ridge import solve_ridge_cv

    n, p, v, K = args.n, args.p, args.voxels, 5
    alphas = np.logspace(0, 5, 10)
    X, Y = make_problem(n, p, v)
    folds = kfold(n, K)
    env = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    times = {}
    ref = None
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, env=env,
                          dashboard_address=None) as cluster, Client(cluster):
            Yd = da.from_array(Y, chunks=(n, args.voxel_block))
            t = time.perf_counter()
            res = solve_ridge_cv(X, Yd, alphas, folds, dtype="float32")
            times[workers] = time.perf_counter() - t
            if ref is None:
                ref = res
            else:
                same = np.array_equal(ref.best_alpha_index, res.best_alpha_index)
    lines = [f"### ridge CV on a LocalCluster: n={n}, p={p}, v={v}, voxel chunks of {args.voxel_block}, "
             f"{datetime.date.today().isoformat()}", "", f"machine: {machine()}", "",
             "| workers (1 thread each) | seconds | speedup |", "|---:|---:|---:|"]
    for w, s in times.items():
        lines.append(f"| {w} | {s:.1f} | {times[1] / s:.2f} |")
    lines += ["", f"identical chosen alphas with 1 and 2 workers: {same}", ""]
    return "\n".join(lines)


def case_lebel(args) -> str:
    import dask
    import dask.array as da
    import zarr

    from scalenc.ridge import solve_ridge_cv

    n, p, v, K = args.n, args.p, args.voxels, 5
    alphas = np.logspace(0, 5, 10)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc-ridge-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "Y.zarr"
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, p)).astype(np.float32)
    t = time.perf_counter()
    z = zarr.open_array(str(store), mode="w", shape=(n, v), chunks=(n, args.voxel_block), dtype="f4")
    for s in range(0, v, args.voxel_block):
        e = min(v, s + args.voxel_block)
        w = rng.standard_normal((p, e - s)).astype(np.float32) / np.sqrt(p)
        z[:, s:e] = X @ w + rng.standard_normal((n, e - s)).astype(np.float32)
    t_gen = time.perf_counter() - t
    folds = kfold(n, K)
    Yd = da.from_zarr(str(store))
    t = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=1):  # one block in memory at a time
        res = solve_ridge_cv(X, Yd, alphas, folds, dtype="float32", return_coef=False)
    t_fit = time.perf_counter() - t
    nte = n / K
    flop = 2 * n * p * v + K * (2 * 2 * p * p * v + alphas.size * 2 * p * p * v) + 2 * p * p * v
    rss = peak_rss_bytes() / 2**20
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"### ridge CV out of core, LeBel scale: n={n}, p={p}, v={v}, {alphas.size} alphas, {K} folds "
             f"(test folds of {nte:.0f} TRs), Y from zarr in blocks of {args.voxel_block} voxels, "
             f"{datetime.date.today().isoformat()}", "", f"machine: {machine()}", "",
             "| step | seconds |", "|---|---:|",
             f"| write synthetic Y ({n * v * 4 / 2**30:.1f} GiB float32) to zarr | {t_gen:.0f} |",
             f"| scalenc solve_ridge_cv (numpy, float32, scores + alphas) | {t_fit:.0f} |", "",
             f"peak RSS {rss / 1024:.2f} GiB; FLOP of the big products {flop:.2e} "
             f"({flop / t_fit / 1e9:.0f} GFLOP/s achieved); distinct alphas chosen "
             f"{len(np.unique(res.best_alphas))}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=("cpu", "cluster", "lebel"), default="cpu")
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("-p", type=int, default=None)
    ap.add_argument("--voxels", type=int, default=None)
    ap.add_argument("--voxel-block", type=int, default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    defaults = {"cpu": (6000, 768, 8000, 2000), "cluster": (6000, 768, 8000, 1000),
                "lebel": (28000, 3072, 95556, 2048)}[args.case]
    args.n = args.n or defaults[0]
    args.p = args.p or defaults[1]
    args.voxels = args.voxels or defaults[2]
    args.voxel_block = args.voxel_block or defaults[3]
    table = {"cpu": case_cpu, "cluster": case_cluster, "lebel": case_lebel}[args.case](args)
    emit(table, args.record)


if __name__ == "__main__":
    main()
