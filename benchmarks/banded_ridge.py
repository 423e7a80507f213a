"""Benchmark: scalenc's banded ridge (p-space, one eigendecomposition per fold and
candidate) vs himalaya's ``BandedRidgeCV`` (random search, an SVD of the scaled training
design per fold and candidate, predictions per alpha).

Problem (defaults): n=6,000 TRs, two feature spaces of 768 and 32 features, 8,000
voxels (a third driven by each space, a third by both, spread SNRs), the same 20
candidate gammas (Dirichlet draws, concentrations 0.1 and 1 alternating) x 10 alphas,
5 contiguous folds, held-out Pearson r to choose, float32, numpy backend for both.
Exact one-space corners are left out of the shared candidates because himalaya scales
its design in place and divides by ``sqrt(gamma)`` afterwards (a zero gamma gives NaN).

Reports wall and CPU seconds, the speedup, the share of voxels where both chose the same
candidate and alpha, and the largest relative coefficient difference of each solver from
a float64 closed-form refit with the chosen (gamma, alpha) of each voxel. On a shared
machine ``--himalaya-candidates K`` runs himalaya (and scalenc once more) on the first K
candidates only (himalaya's cost is linear in the number of candidates: its loop does
the same work for each, so its full time is extrapolated).

    python benchmarks/banded_ridge.py --record
    python benchmarks/banded_ridge.py -n 2000 --p-a 256 --voxels 2000   # a quick check
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import emit, machine  # noqa: E402


def make_problem(n, p_a, p_b, v, seed=0, dtype=np.float32):
    """Two feature spaces; voxels driven by A, by B or by both, with a spread of SNRs."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((p_a, p_a)) / np.sqrt(p_a)
    Xa = rng.standard_normal((n, p_a)) @ (np.eye(p_a) + 0.5 * mix)
    Xb = rng.standard_normal((n, p_b))
    X = np.hstack([Xa, Xb]).astype(dtype)
    groups = np.r_[np.zeros(p_a, np.int64), np.ones(p_b, np.int64)]
    Wa = rng.standard_normal((p_a, v)) / np.sqrt(p_a)
    Wb = rng.standard_normal((p_b, v)) / np.sqrt(p_b)
    who = np.arange(v) % 3                      # 0: A only, 1: B only, 2: both
    Wa[:, who == 1] = 0
    Wb[:, who == 0] = 0
    snr = np.exp(rng.uniform(np.log(0.02), np.log(2.0), v))
    Y = (X @ (np.vstack([Wa, Wb]) * np.sqrt(snr)).astype(dtype)) + rng.standard_normal((n, v)).astype(dtype)
    return X, Y.astype(dtype), groups


def kfold(n, k):
    tests = np.array_split(np.arange(n), k)
    return [(np.setdiff1d(np.arange(n), t), t) for t in tests]


def banded_closed_form(X, Y, groups, gammas, alphas):
    """float64 W = S (S Xc^T Xc S + a I)^-1 S Xc^T Yc per distinct (gamma, alpha)."""
    X = np.asarray(X, np.float64)
    Xc = X - X.mean(0)
    Yc = np.asarray(Y, np.float64) - Y.mean(0)
    G, C = Xc.T @ Xc, Xc.T @ Yc
    W = np.empty((X.shape[1], Y.shape[1]))
    keys = np.column_stack([gammas.T, alphas])
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    for i, key in enumerate(uniq):
        s = np.sqrt(key[:-1])[groups]
        sel = inv.ravel() == i
        W[:, sel] = s[:, None] * np.linalg.solve(G * np.outer(s, s) + key[-1] * np.eye(len(s)), s[:, None] * C[:, sel])
    return W


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _himalaya(X, Y, groups, folds, cands, alphas):
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV as HBandedRidgeCV
    from himalaya.scoring import correlation_score

    set_backend("numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = HBandedRidgeCV(groups=groups, cv=folds, fit_intercept=True,
                           solver_params=dict(n_iter=cands.astype(np.float32), alphas=alphas.astype(np.float32),
                                              score_func=correlation_score, progress_bar=False)).fit(X, Y)
    e = np.exp(np.asarray(h.deltas_, np.float64))
    h_gamma, h_alpha = e / e.sum(0), 1.0 / e.sum(0)
    h_cand = np.argmin(((cands[:, :, None] - h_gamma[None]) ** 2).sum(1), axis=0)
    h_aidx = np.argmin(np.abs(np.log(alphas)[:, None] - np.log(h_alpha)[None]), axis=0)
    return np.asarray(h.coef_, np.float64), h_cand, h_aidx


def run(args) -> str:
    from scalenc.ridge import banded_candidates, solve_banded_ridge_cv

    n, v, K = args.n, args.voxels, 5
    alphas = np.logspace(0, 5, 10)
    X, Y, groups = make_problem(n, args.p_a, args.p_b, v)
    folds = kfold(n, K)
    cands = banded_candidates(2, args.candidates, (0.1, 1.0), corners=False, random_state=0)

    def scalenc(c):
        return solve_banded_ridge_cv(X, Y, groups, alphas, folds, candidates=c, score="r", dtype="float32",
                                     voxel_block=args.voxel_block, progress=False)

    res, t_sc, c_sc = _timed(lambda: scalenc(cands))
    W_ref = banded_closed_form(X, Y, groups, res.gammas, res.best_alphas)
    err_sc = float(np.abs(res.coef - W_ref).max() / np.abs(W_ref).max())
    rows = [(f"scalenc solve_banded_ridge_cv, all {len(cands)} candidates", t_sc, c_sc, err_sc)]
    k = min(args.himalaya_candidates or len(cands), len(cands))
    sub = cands[:k]
    note = ""
    if k < len(cands):
        res_k, t_k, c_k = _timed(lambda: scalenc(sub))
        rows.append((f"scalenc solve_banded_ridge_cv, first {k} candidates", t_k, c_k, float("nan")))
        note = (f"himalaya was run on the first {k} of the {len(cands)} candidates (the machine was shared by "
                f"other jobs; himalaya's time is linear in the number of candidates: its loop does the same "
                f"work for each), so its {len(cands)}-candidate time is extrapolated as "
                f"{len(cands)}/{k} x measured. ")
    else:
        res_k, t_k, c_k = res, t_sc, c_sc
    (hc, h_cand, h_aidx), t_h, c_h = _timed(lambda: _himalaya(X, Y, groups, folds, sub, alphas))
    W_h = banded_closed_form(X, Y, groups, sub[h_cand].T, alphas[h_aidx])
    rows.append((f"himalaya BandedRidgeCV, first {k} candidates", t_h, c_h,
                 float(np.abs(hc - W_h).max() / np.abs(W_h).max())))
    same_c = float(np.mean(h_cand == res_k.best_candidate))
    same_a = float(np.mean((h_cand == res_k.best_candidate) & (h_aidx == res_k.best_alpha_index)))
    d_h = float(np.abs(hc - res_k.coef).max() / np.abs(res_k.coef).max())
    scale = len(cands) / k
    lines = [f"### banded ridge CV, CPU: n={n}, spaces of {args.p_a} and {args.p_b} features, v={v}, "
             f"{len(cands)} candidates x {alphas.size} alphas, {K} folds, float32, numpy, "
             f"{datetime.date.today().isoformat()}", "", f"machine: {machine()}", "",
             "| solver | wall s | CPU s (all threads) | max rel. coef. diff vs float64 closed form |",
             "|---|---:|---:|---:|"]
    for name, sec, cpu, err in rows:
        lines.append(f"| {name} | {sec:.1f} | {cpu:.1f} | {'' if np.isnan(err) else f'{err:.1e}'} |")
    lines += ["", note + f"Speedup on the same {k} candidates: {t_h / t_k:.1f}x wall, {c_h / c_k:.1f}x CPU; "
                  f"himalaya at {len(cands)} candidates vs scalenc's measured {len(cands)}-candidate run: "
                  f"{t_h * scale / t_sc:.1f}x wall, {c_h * scale / c_sc:.1f}x CPU. "
                  f"Same candidate as himalaya on {100 * same_c:.2f} % of voxels, same candidate and alpha on "
                  f"{100 * same_a:.2f} %; max rel. coef. difference scalenc vs himalaya: {d_h:.1e}. "
                  f"Voxels with gamma_A > 0.5: {100 * np.mean(res.gammas[0] > 0.5):.1f} % "
                  f"(a third of the voxels are driven by A only, a third by B only).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=6000)
    ap.add_argument("--p-a", type=int, default=768)
    ap.add_argument("--p-b", type=int, default=32)
    ap.add_argument("--voxels", type=int, default=8000)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--voxel-block", type=int, default=2000)
    ap.add_argument("--himalaya-candidates", type=int, default=None,
                    help="run himalaya (and a matching scalenc run) on the first K candidates only")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    emit(run(args), args.record)


if __name__ == "__main__":
    main()
