"""p-space ridge against float64 closed-form and brute-force references, on every backend."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from scalenc.ridge import RidgeCV, RidgeCVResult, ridge_closed_form, solve_ridge_cv, use_backend
from scalenc.ridge.backend import get_backend, unavailable




def _data(n=240, p=12, v=30, seed=0, offset=0.7):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) + offset
    W = rng.standard_normal((p, v)) * rng.uniform(0, 1, v)  # voxels of varying SNR -> varied alphas
    Y = X @ W + 2.0 * rng.standard_normal((n, v)) + 1.5
    return X, Y


def _kfold(n, k=5):
    tests = np.array_split(np.arange(n), k)
    return [(np.setdiff1d(np.arange(n), t), t) for t in tests]


def _r(y, yh):
    y = y - y.mean(0)
    yh = yh - yh.mean(0)
    den = np.sqrt((y * y).sum(0) * (yh * yh).sum(0))
    return np.where(den > 0, (y * yh).sum(0) / np.where(den > 0, den, 1), 0)


def _brute_scores(X, Y, alphas, folds, score="r", fit_intercept=True):
    """Brute-force CV: explicit float64 solve per fold and alpha, predictions, scores."""
    S = np.zeros((len(folds), len(alphas), Y.shape[1]))
    for k, (tr, te) in enumerate(folds):
        for i, a in enumerate(alphas):
            W, b = ridge_closed_form(X[tr], Y[tr], a, fit_intercept=fit_intercept)
            P = X[te] @ W + b
            if score == "r":
                S[k, i] = _r(Y[te], P)
            else:
                S[k, i] = 1 - ((Y[te] - P) ** 2).sum(0) / ((Y[te] - Y[te].mean(0)) ** 2).sum(0)
    return S


ALPHAS = np.logspace(-1, 4, 9)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-8), ("float32", 1e-3)])
def test_weights_equal_closed_form(backend, dtype, tol):
    X, Y = _data()
    res = solve_ridge_cv(X, Y, ALPHAS, _kfold(len(X)), backend=backend, dtype=dtype)
    W, b = ridge_closed_form(X, Y, res.best_alphas)
    assert np.abs(res.coef - W).max() / np.abs(W).max() < tol
    assert np.abs(res.intercept - b).max() / np.abs(b).max() < tol
    assert len(np.unique(res.best_alphas)) > 2  # the data choose different alphas


@pytest.mark.parametrize("score", ["r", "r2"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_chosen_alphas_equal_brute_force(backend, score, fit_intercept):
    X, Y = _data(seed=1)
    folds = _kfold(len(X))
    res = solve_ridge_cv(X, Y, ALPHAS, folds, score=score, fit_intercept=fit_intercept, backend=backend,
                         dtype="float64")
    S = _brute_scores(X, Y, ALPHAS, folds, score, fit_intercept)
    np.testing.assert_allclose(res.fold_scores, S, atol=1e-9)
    np.testing.assert_array_equal(res.best_alpha_index, S.mean(0).argmax(0))
    W, b = ridge_closed_form(X, Y, res.best_alphas, fit_intercept=fit_intercept)
    np.testing.assert_allclose(res.coef, W, rtol=1e-8, atol=1e-10)


def test_small_test_folds_use_prediction_path_and_agree(backend):
    """Test folds smaller than p switch from sufficient statistics to predictions."""
    X, Y = _data(n=120, p=40, seed=2)
    folds = _kfold(120, 10)  # 12 test rows < 40 features
    res = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", backend=backend)
    np.testing.assert_allclose(res.fold_scores, _brute_scores(X, Y, ALPHAS, folds), atol=1e-9)


def test_n_smaller_than_p_kernel_form(backend):
    X, Y = _data(n=60, p=150, v=8, seed=3)
    folds = _kfold(60, 3)
    res = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", backend=backend)
    np.testing.assert_allclose(res.fold_scores, _brute_scores(X, Y, ALPHAS, folds), atol=1e-8)
    W, b = ridge_closed_form(X, Y, res.best_alphas)
    assert np.abs(res.coef - W).max() / np.abs(W).max() < 1e-8
    np.testing.assert_allclose(res.intercept, b, rtol=1e-8)


def test_folds_that_do_not_cover_all_rows(backend):
    """Explicit folds whose train and test do not partition the rows (no downdate)."""
    X, Y = _data(seed=4)
    n = len(X)
    folds = [(np.arange(0, 100), np.arange(150, 200)), (np.arange(100, 240), np.arange(0, 40)),
             (np.r_[0:60, 120:200], np.arange(60, 120))]
    res = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", backend=backend)
    np.testing.assert_allclose(res.fold_scores, _brute_scores(X, Y, ALPHAS, folds), atol=1e-9)
    assert n == 240


def test_voxel_block_invariance(backend):
    X, Y = _data(v=37, seed=5)
    folds = _kfold(len(X))
    for dtype, rtol in (("float64", 1e-10), ("float32", 1e-4)):
        ref = solve_ridge_cv(X, Y, ALPHAS, folds, voxel_block=None, dtype=dtype, backend=backend)
        for block in (1, 7, 36):
            r = solve_ridge_cv(X, Y, ALPHAS, folds, voxel_block=block, dtype=dtype, backend=backend)
            np.testing.assert_array_equal(r.best_alpha_index, ref.best_alpha_index)
            np.testing.assert_allclose(r.coef, ref.coef, rtol=rtol, atol=rtol * np.abs(ref.coef).max())
            np.testing.assert_allclose(r.cv_scores, ref.cv_scores, atol=rtol)


@pytest.mark.parametrize("single_alpha", [False, True])
def test_dask_path_equals_in_memory(backend, single_alpha):
    X, Y = _data(v=40, seed=6)
    folds = _kfold(len(X))
    ref = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", single_alpha=single_alpha, backend=backend)
    Yd = da.from_array(Y, chunks=(60, 9))  # chunked over rows too: rechunked internally
    r = solve_ridge_cv(X, Yd, ALPHAS, folds, dtype="float64", single_alpha=single_alpha, backend=backend)
    np.testing.assert_array_equal(r.best_alpha_index, ref.best_alpha_index)
    np.testing.assert_allclose(r.coef, ref.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.intercept, ref.intercept, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.cv_scores, ref.cv_scores, atol=1e-12)


def test_single_alpha_is_best_mean_over_voxels(backend):
    X, Y = _data(seed=7)
    folds = _kfold(len(X))
    res = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", single_alpha=True, backend=backend)
    S = _brute_scores(X, Y, ALPHAS, folds).mean(0)
    best = ALPHAS[S.mean(1).argmax()]
    assert np.all(res.best_alphas == best)
    W, _ = ridge_closed_form(X, Y, best)
    np.testing.assert_allclose(res.coef, W, rtol=1e-8, atol=1e-10)


def test_alpha_squared_grid(backend):
    X, Y = _data(seed=8)
    folds = _kfold(len(X))
    a = solve_ridge_cv(X, Y, np.sqrt(ALPHAS), folds, alpha_squared=True, dtype="float64", backend=backend)
    b = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", backend=backend)
    np.testing.assert_allclose(a.best_alphas, b.best_alphas)
    np.testing.assert_allclose(a.alphas, ALPHAS)


def test_torch_cpu_equals_numpy_and_context_manager():
    X, Y = _data(seed=9)
    folds = _kfold(len(X))
    ref = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64")
    with use_backend("torch", device="cpu") as b:
        assert get_backend() == b
        r = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64")
    assert get_backend() == get_backend("numpy")  # scoped to the block
    np.testing.assert_array_equal(r.best_alpha_index, ref.best_alpha_index)
    np.testing.assert_allclose(r.coef, ref.coef, rtol=1e-10, atol=1e-12)
    import torch

    # float32, with a torch Y: scores agree to float32 rounding
    r2 = solve_ridge_cv(X, torch.from_numpy(Y), ALPHAS, folds, backend="torch", dtype="float32")
    np.testing.assert_allclose(r2.cv_scores, ref.cv_scores, atol=1e-5)


def test_bad_input_errors():
    X, Y = _data()
    folds = _kfold(len(X))
    with pytest.raises(ValueError, match="Y must be 2-D with 240 rows"):
        solve_ridge_cv(X, Y[:-1], ALPHAS, folds)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        solve_ridge_cv(Xn, Y, ALPHAS, folds)
    with pytest.raises(ValueError, match="alphas must be positive"):
        solve_ridge_cv(X, Y, [0.0, 1.0], folds)
    with pytest.raises(ValueError, match="score must be one of"):
        solve_ridge_cv(X, Y, ALPHAS, folds, score="mse")
    with pytest.raises(ValueError, match="unknown ridge backend 'jax'"):
        solve_ridge_cv(X, Y, ALPHAS, folds, backend="jax")
    with pytest.raises(ValueError, match="fold 0: empty"):
        solve_ridge_cv(X, Y, ALPHAS, [(np.arange(10), np.array([], int))])
    if unavailable("cupy"):
        with pytest.raises((RuntimeError, ImportError), match="cupy|CuPy|CUDA"):
            solve_ridge_cv(X, Y, ALPHAS, folds, backend="cupy")
    if unavailable("torch", "cuda"):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            solve_ridge_cv(X, Y, ALPHAS, folds, backend="torch", device="cuda")


def test_result_type(backend):
    X, Y = _data(v=5)
    r = solve_ridge_cv(X, Y, ALPHAS, _kfold(len(X)), return_coef=False, backend=backend)
    assert isinstance(r, RidgeCVResult) and r.coef is None
    assert r.cv_scores.shape == (9, 5) and r.fold_scores.shape == (5, 9, 5)


@pytest.mark.parametrize("scoring", ["r", "r2"])
def test_ridgecv_estimator_equals_references(backend, scoring):
    """RidgeCV on every backend (Y given as that backend's array): choices, CV scores,
    weights, predictions and scores equal the float64 brute-force / closed-form ones."""
    X, Y = _data(seed=12)
    Xn, Yn = _data(seed=13)
    folds = _kfold(len(X))
    m = RidgeCV(alphas=ALPHAS, cv=folds, scoring=scoring, backend=backend, dtype="float64")
    m.fit(X, backend.asarray(Y))
    S = _brute_scores(X, Y, ALPHAS, folds, scoring)
    np.testing.assert_array_equal(m.best_alpha_index_, S.mean(0).argmax(0))
    np.testing.assert_allclose(m.cv_scores_, S.mean(0), atol=1e-9)
    W, b = ridge_closed_form(X, Y, m.alphas_)
    np.testing.assert_allclose(m.coef_, W, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.intercept_, b, rtol=1e-8)
    P = Xn @ W + b
    np.testing.assert_allclose(m.predict(Xn), P, rtol=1e-8, atol=1e-9)
    ref = _r(Yn, P) if scoring == "r" else 1 - ((Yn - P) ** 2).sum(0) / ((Yn - Yn.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(m.score(Xn, Yn), ref, atol=1e-9)


def test_backend_names_and_modules():
    """One module per backend; torch_cuda is torch defaulting to CUDA; unknown names fail."""
    assert type(get_backend("numpy")).__module__ == "scalenc.ridge.backend.numpy"
    t = get_backend("torch")
    assert type(t).__module__ == "scalenc.ridge.backend.torch" and t.device == "cpu"
    assert get_backend("torch", "cpu") == t and get_backend("numpy") != t
    import pickle

    assert pickle.loads(pickle.dumps(t)) == t
    with pytest.raises(ValueError, match="runs on a CUDA device"):
        get_backend("torch_cuda", "cpu")
    if unavailable("torch", "cuda"):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            get_backend("torch_cuda")


@pytest.mark.slow
def test_two_process_local_cluster_equals_in_process():
    """Voxel chunks solved on 2 worker processes (X-side sent once) give the in-process result."""
    from distributed import Client, LocalCluster

    X, Y = _data(v=50, seed=10)
    folds = _kfold(len(X))
    ref = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        r = solve_ridge_cv(X, da.from_array(Y, chunks=(len(X), 10)), ALPHAS, folds, dtype="float64")
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_array_equal(r.best_alpha_index, ref.best_alpha_index)
    np.testing.assert_allclose(r.coef, ref.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.cv_scores, ref.cv_scores, atol=1e-12)


def _slow_chunk(block):
    import time

    time.sleep(0.15)  # stretch the fit so that a worker can be killed in the middle of it
    return block


@pytest.mark.slow
def test_fit_survives_a_killed_worker():
    """SIGKILL one of two worker processes mid-fit: the scheduler reruns its blocks elsewhere
    and the result is identical to the in-process one."""
    import os
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster

    X, Y = _data(n=240, v=240, seed=11)
    folds = _kfold(len(X))
    ref = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        Yd = da.from_array(Y, chunks=(240, 6)).map_blocks(_slow_chunk, dtype=Y.dtype)
        killed = []

        def kill():
            time.sleep(1.0)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        t = threading.Thread(target=kill)
        t.start()
        start = time.time()
        r = solve_ridge_cv(X, Yd, ALPHAS, folds, dtype="float64")
        t.join()
        assert killed and time.time() - start > 1.0  # the kill happened during the fit
    np.testing.assert_array_equal(r.best_alpha_index, ref.best_alpha_index)
    np.testing.assert_allclose(r.coef, ref.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.cv_scores, ref.cv_scores, atol=1e-12)


def test_run_blocks_threads_store_every_span_in_order_with_single_threaded_blas():
    from threadpoolctl import threadpool_info

    from scalenc.ridge.solver import local_workers, run_blocks

    spans = [slice(a, a + 3) for a in range(0, 30, 3)]
    seen, blas_threads = [], []

    def fn(sl):
        blas_threads.append(max([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] or [1]))
        return np.arange(sl.start, sl.stop) ** 2

    out = np.empty(30, dtype=np.int64)

    def store(sl, val):
        seen.append(sl.start)
        out[sl] = val

    run_blocks(fn, spans, store, workers=3)
    assert seen == list(range(0, 30, 3))  # stored in order
    np.testing.assert_array_equal(out, np.arange(30) ** 2)
    assert set(blas_threads) == {1}
    assert local_workers(1) == 1 and local_workers(50) >= 1


def test_threaded_voxel_blocks_equal_one_block(backend):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((120, 6))
    Y = X @ rng.standard_normal((6, 57)) + rng.standard_normal((120, 57))
    folds = [(np.setdiff1d(np.arange(120), te), te) for te in np.array_split(np.arange(120), 4)]
    alphas = np.logspace(-2, 3, 6)
    one = solve_ridge_cv(X, Y, alphas, folds, voxel_block=None, dtype="float64", backend=backend)
    many = solve_ridge_cv(X, Y, alphas, folds, voxel_block=5, dtype="float64", backend=backend)
    np.testing.assert_array_equal(many.best_alpha_index, one.best_alpha_index)
    np.testing.assert_allclose(many.coef, one.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(many.cv_scores, one.cv_scores, rtol=1e-10, atol=1e-12)
