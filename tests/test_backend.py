"""Every operation of every ridge backend (the ``backend`` fixture of conftest.py, derived
from ``scalenc.ridge.backend._MODULES``) against numpy in float64, and the X side of the
solver computed on a backend against the one computed with numpy."""
from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

from scalenc.ridge import solve_ridge_cv
from scalenc.ridge import solver
from scalenc.ridge.backend import BACKENDS, GPU_BACKENDS, _MODULES, get_backend, use_backend

RNG = np.random.default_rng(0)
A = RNG.standard_normal((7, 5))
B = RNG.standard_normal((7, 5))


def _np(backend, x):
    out = backend.to_numpy(x)
    assert isinstance(out, np.ndarray)
    return out


def test_one_list_of_backends():
    assert BACKENDS == tuple(_MODULES) and {"numpy", "cupy", "torch", "torch_cuda"} <= set(BACKENDS)
    assert GPU_BACKENDS == tuple(n for n, (_, _, gpu) in _MODULES.items() if gpu)
    assert {"cupy", "torch_cuda"} <= set(GPU_BACKENDS) and "numpy" not in GPU_BACKENDS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asarray_and_to_numpy(backend, dtype):
    x = backend.asarray(A, dtype=dtype)
    assert type(x).__module__.split(".")[0] == backend.xp.__name__.split(".")[0]
    back = _np(backend, x)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, A.astype(dtype))
    assert backend.asarray(x) is x or np.shares_memory(_np(backend, backend.asarray(x)), back)  # no copy when there
    idx = backend.asarray(np.array([3, 0, 6]))
    np.testing.assert_array_equal(_np(backend, backend.asarray(A)[idx]), A[[3, 0, 6]])


def test_sum_and_argmax(backend):
    a = backend.asarray(A)
    for axis in (0, 1):
        np.testing.assert_allclose(_np(backend, backend.sum(a, axis)), A.sum(axis), rtol=1e-14)
        np.testing.assert_array_equal(_np(backend, backend.argmax(a, axis)), A.argmax(axis))


def test_coldot(backend):
    np.testing.assert_allclose(_np(backend, backend.coldot(backend.asarray(A), backend.asarray(B))),
                               (A * B).sum(0), rtol=1e-13)


def test_sqrt_maximum_where(backend):
    a = backend.asarray(A)
    np.testing.assert_allclose(_np(backend, backend.sqrt(backend.asarray(np.abs(A)))), np.sqrt(np.abs(A)), rtol=1e-15)
    np.testing.assert_array_equal(_np(backend, backend.maximum(a, 0.25)), np.maximum(A, 0.25))
    np.testing.assert_array_equal(_np(backend, backend.where(a > 0, a, 0.0 * a)), np.where(A > 0, A, 0.0))


def test_stack(backend):
    for axis in (0, 1):
        got = backend.stack([backend.asarray(A), backend.asarray(B)], axis)
        np.testing.assert_array_equal(_np(backend, got), np.stack([A, B], axis))


def test_eigh(backend):
    S = A.T @ A + np.eye(5)
    w, V = backend.eigh(backend.asarray(S))
    w_ref = np.linalg.eigvalsh(S)
    np.testing.assert_allclose(_np(backend, w), w_ref, rtol=1e-12)
    V = _np(backend, V)
    np.testing.assert_allclose(V @ np.diag(w_ref) @ V.T, S, atol=1e-12)
    np.testing.assert_allclose(V.T @ V, np.eye(5), atol=1e-12)


def test_all_finite(backend):
    assert backend.all_finite(backend.asarray(A))
    bad = A.copy()
    bad[2, 3] = np.inf
    assert not backend.all_finite(backend.asarray(bad))


def test_device_queries_and_pickle(backend):
    assert backend.on_gpu == (backend.name in GPU_BACKENDS)
    free = backend.free_memory()
    assert (free is None) if not backend.on_gpu else free > 0
    backend.synchronize()
    assert pickle.loads(pickle.dumps(backend)) == backend


# --------------------------------------------------------------------------------------
# the X side through a backend
def _problem(n=300, p=40, v=60, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) + 0.5
    Y = X @ (rng.standard_normal((p, v)) * rng.uniform(0, 0.5, v)) + 2.0 * rng.standard_normal((n, v))
    folds = [(np.setdiff1d(np.arange(n), t), t) for t in np.array_split(np.arange(n), 5)]
    return X, Y, folds


ALPHAS = np.logspace(-1, 4, 9)


def _operators(side, alphas):
    """Basis-free form of an X-side candidate: ``Q diag(1/(lam + a)) Q^T`` per fold and
    alpha, and the refit's (eigenvector signs and order do not matter)."""
    bases = [f.basis for f in side.folds] + [side.full]
    return [b.Q.astype(np.float64) @ np.diag(1 / (b.lam + a)) @ b.Q.T.astype(np.float64) for b in bases for a in alphas]


@pytest.mark.parametrize("shape", [(300, 40), (60, 150)], ids=["p-space", "kernel"])
def test_x_side_on_backend_equals_numpy(backend, shape):
    """G, the fold downdates and the eigendecompositions through ``backend`` (float64 there)
    equal numpy's: means, sums and test rows to rounding, every fold's ridge operator to
    float64 tolerance; the solver then chooses identical alphas."""
    X, Y, folds = _problem(*shape)
    ref = solver.prepare_x(X, folds, ALPHAS, dtype="float64", backend="numpy")
    got = solver.prepare_x(X, folds, ALPHAS, dtype="float64", backend=backend)
    assert isinstance(got.X, np.ndarray) and isinstance(got.candidates[0].full.Q, np.ndarray)  # host form
    np.testing.assert_allclose(got.X, ref.X, atol=1e-12)
    np.testing.assert_allclose(got.mean_x, ref.mean_x, atol=1e-12)
    for f, r in zip(got.folds, ref.folds):
        np.testing.assert_allclose(f.mx, r.mx, atol=1e-12)
        np.testing.assert_allclose(f.sx, r.sx, atol=1e-9)
        np.testing.assert_allclose(f.Xte, r.Xte, atol=1e-12)
    for a, b in zip(_operators(got.candidates[0], ALPHAS), _operators(ref.candidates[0], ALPHAS)):
        np.testing.assert_allclose(a, b, atol=1e-10 * np.abs(b).max())
    res_ref = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", backend="numpy")
    res = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", backend=backend)
    np.testing.assert_array_equal(res.best_alpha_index, res_ref.best_alpha_index)
    np.testing.assert_allclose(res.cv_scores, res_ref.cv_scores, atol=1e-10)
    np.testing.assert_allclose(res.coef, res_ref.coef, rtol=1e-9, atol=1e-12)
    assert len(np.unique(res.best_alpha_index)) > 1


def test_banded_x_side_on_backend_equals_numpy(backend):
    X, _, folds = _problem(n=200, p=12)
    scales = np.sqrt(np.array([[0.3] * 8 + [0.7] * 4, [0.9] * 8 + [0.1] * 4]))
    ref = solver.prepare_x(X, folds, ALPHAS, dtype="float64", scales=scales, backend="numpy")
    got = solver.prepare_x(X, folds, ALPHAS, dtype="float64", scales=scales, backend=backend)
    for cg, cr in zip(got.candidates, ref.candidates):
        for a, b in zip(_operators(cg, ALPHAS), _operators(cr, ALPHAS)):
            np.testing.assert_allclose(a, b, atol=1e-10 * np.abs(b).max())


@pytest.mark.parametrize("scaled", [False, True])
def test_kernel_form_equals_p_space_form(backend, scaled):
    """p > n: the n x n kernel decomposition gives the ridge solution of the p x p one
    (the refit weights ``Q diag(1/(lam + a)) Q^T Xc^T y`` for every alpha)."""
    rng = np.random.default_rng(7)
    n, p = 40, 90
    Xc = rng.standard_normal((n, p))
    Xc -= Xc.mean(0)
    y = rng.standard_normal((n, 3))
    s = rng.uniform(0.2, 1.0, p) if scaled else None
    Xb, Gb = backend.asarray(Xc), backend.asarray(Xc.T @ Xc)
    sb = None if s is None else backend.asarray(s)
    Qk, lk = solver._scaled_basis(Gb, Xb, sb, backend)      # kernel form (n x n)
    Qp, lp = solver._scaled_basis(Gb, None, sb, backend)    # p-space form (p x p)
    Qk, lk, Qp, lp = (backend.to_numpy(a) for a in (Qk, lk, Qp, lp))
    assert Qk.shape == (p, n - 1) and Qp.shape == (p, p)  # centred: rank n - 1
    C = Xc.T @ y
    for a in ALPHAS:
        Wk = Qk @ ((Qk.T @ C) / (lk + a)[:, None])
        Wp = Qp @ ((Qp.T @ C) / (lp + a)[:, None])
        S = np.ones(p) if s is None else s
        W_ref = S[:, None] * np.linalg.solve((Xc * S).T @ (Xc * S) + a * np.eye(p), (Xc * S).T @ y)
        np.testing.assert_allclose(Wk, Wp, atol=1e-9 * np.abs(Wp).max())
        np.testing.assert_allclose(Wk, W_ref, atol=1e-9 * np.abs(W_ref).max())


def test_device_copy_is_made_once_and_dropped_with_the_x_side():
    """The X side is sent to a backend once per (X side, backend): every voxel block, nested
    fold or subject sharing it gets the same device copy, freed with the host X side."""
    X, Y, folds = _problem()
    bk = get_backend("torch", "cpu")
    xs = solver.prepare_x(X, folds, ALPHAS, backend="numpy")
    d1 = solver.on_backend(xs, bk)
    assert solver.on_backend(xs, bk) is d1 and solver.on_backend(xs, get_backend("numpy")) is xs
    assert type(d1.candidates[0].folds[0].basis.Q).__module__.startswith("torch")
    calls = []
    orig = bk.asarray

    def counting(x, dtype=None):
        if isinstance(x, np.ndarray):  # a host array sent to the device
            calls.append(x.shape)
        return orig(x, dtype)

    bk.asarray = counting
    solve_ridge_cv(X, Y, ALPHAS, folds, backend=bk, x_side=xs, voxel_block=7)  # 9 blocks
    # only the Y blocks (n, <= 7) and per-voxel vectors (<= 7,) (the chosen alphas) are sent
    assert calls and all(c[-1] <= 7 and (len(c) == 1 or c[0] == len(X)) for c in calls)
    key = (id(xs), bk)
    assert key in solver._DEVICE_COPIES
    del xs, d1
    gc.collect()
    assert key not in solver._DEVICE_COPIES
    # prepare_x on a backend leaves its device copy in place: nothing to send afterwards
    with use_backend(bk):
        xs2 = solver.prepare_x(X, folds, ALPHAS)
    assert (id(xs2), bk) in solver._DEVICE_COPIES


class _FakeGpu(type(get_backend("numpy"))):
    """numpy arrays, but a device with a given amount of free memory."""

    def __init__(self, free):
        super().__init__()
        self._free = free

    @property
    def on_gpu(self):
        return True

    def free_memory(self):
        return self._free


def test_voxel_block_from_free_device_memory():
    n, p, K = 1_000, 100, 5
    per_voxel = 8 * (3 * n + (3 * K + 6) * p)
    gpu = _FakeGpu(2 ** 30)
    assert solver.device_voxel_block(2_000, gpu, n, p, K, 10 ** 7) == int(0.5 * 2 ** 30 // per_voxel)
    assert solver.device_voxel_block(2_000, gpu, n, p, K, 500) == 500           # not more than the voxels
    assert solver.device_voxel_block(2_000, _FakeGpu(10 ** 6), n, p, K, 10 ** 7) == 2_000  # never below the request
    assert solver.device_voxel_block(2_048, get_backend("numpy"), n, p, K, 10 ** 7) == 2_048  # CPU: unchanged
    assert solver.device_voxel_block(2_048, get_backend("torch"), n, p, K, 10 ** 7) == 2_048
    X, Y, folds = _problem(v=40)
    ref = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", voxel_block=3)
    got = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", voxel_block=3, backend=gpu)  # one block of 40
    np.testing.assert_array_equal(got.best_alpha_index, ref.best_alpha_index)
    np.testing.assert_allclose(got.coef, ref.coef, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_gpu_x_side_lives_on_the_device_and_blocks_fill_it(name):
    """On a CUDA backend the X side's device copy is on the GPU (made by prepare_x itself), the
    voxel block grows past the CPU default to fill free memory, and the fit equals numpy's."""
    from scalenc.ridge.backend import unavailable

    if unavailable(name):
        pytest.skip(unavailable(name))
    bk = get_backend(name)
    X, Y, folds = _problem(v=300)
    xs = solver.prepare_x(X, folds, ALPHAS, dtype="float64", backend=bk)
    dev = solver._DEVICE_COPIES[(id(xs), bk)][1]
    Q = dev.candidates[0].folds[0].basis.Q
    assert "cuda" in str(getattr(Q, "device", "cuda")) and type(Q).__module__.split(".")[0] in ("torch", "cupy")
    assert solver.device_voxel_block(2_048, bk, 28_000, 3_072, 5, 10 ** 6) > 2_048
    ref = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", backend="numpy", voxel_block=50)
    got = solve_ridge_cv(X, Y, ALPHAS, folds, dtype="float64", backend=bk, voxel_block=50, x_side=xs)
    np.testing.assert_array_equal(got.best_alpha_index, ref.best_alpha_index)
    np.testing.assert_allclose(got.coef, ref.coef, rtol=1e-9, atol=1e-12)
