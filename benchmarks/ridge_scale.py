"""Benchmark: the ridge at 10x LeBel (1,000,000 voxels), measured on a slice and extrapolated.

Ten LeBel subjects' worth of voxels (UTS03 alone has 95,556) at LeBel's row count cannot be
held, or written, on a 2-core 24 GiB machine in minutes (112 GB of float32 responses), but
the solver's cost is linear in voxels with a fixed X side, so a measured slice fixes it:

1. X (n x p, synthetic, correlated columns) and a slice of Y (``--blocks`` voxel blocks of
   ``--voxel-block`` voxels, a spread of SNRs) written to a zarr store chunk by chunk
   (one chunk per block, as ``scalenc assembly build`` stores responses).
2. :func:`scalenc.ridge.solve_ridge_cv` with Y as the dask array of that store, on a
   ``distributed.LocalCluster`` of one single-threaded worker process, BLAS on one thread
   (so its CPU seconds are core-seconds, whatever else shares the machine): one block at a
   time, as each worker of a real cluster runs them.
3. Measured: the X side (``G = X^T X``, fold downdates, eigendecompositions, in the client)
   in seconds, every block's task seconds (Dask's task stream), peak RSS of the worker (the
   memory a cluster worker needs: bounded by the block, not by the voxel count) and of the
   client.
4. Extrapolated to ``--voxels`` (default 1,000,000): blocks x median block seconds, as
   core-hours, and the cluster plan (workers x hours) for workers of ``--plan-cores`` cores;
   GPU hours estimated from the FLOP count of the block products and a stated sustained
   FLOP rate (``--gpu-tflops``), labelled an estimate (no GPU on the machine that ran it).

Prints markdown tables; ``--record`` appends them to ``benchmarks/RESULTS.md``.

    python benchmarks/ridge_scale.py --record              # ~8 min on an idle core
    python benchmarks/ridge_scale.py -n 4000 -p 512 --blocks 3 --voxel-block 1024   # a quick check
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# single-threaded BLAS everywhere: core-seconds are then measured cleanly even when other jobs
# share the cores (idle OpenBLAS threads spin and would count), and scale by cores per worker
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import emit, machine, peak_rss_bytes  # noqa: E402


def _cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) of the calling process."""
    t = os.times()
    return t.user + t.system


def _import_solver() -> None:
    import scalenc.ridge.solver  # noqa: F401


def _worker_peak_rss() -> int:
    """VmHWM of the calling process (run on the worker through ``client.run``)."""
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def write_problem(store: Path, n: int, p: int, v: int, block: int, seed: int = 0):
    """X (n, p) float32 in memory; Y (n, v) float32 on zarr, written one block at a time."""
    import zarr

    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((p, p)).astype(np.float32) / np.sqrt(p)
    X = rng.standard_normal((n, p), dtype=np.float32) @ (np.eye(p, dtype=np.float32) + 0.5 * mix)
    z = zarr.open_array(str(store), mode="w", shape=(n, v), chunks=(n, block), dtype="f4")
    for s in range(0, v, block):
        e = min(v, s + block)
        W = rng.standard_normal((p, e - s), dtype=np.float32) / np.sqrt(p)
        snr = np.exp(rng.uniform(np.log(0.01), np.log(2.0), e - s)).astype(np.float32)
        z[:, s:e] = X @ (W * np.sqrt(snr)) + rng.standard_normal((n, e - s), dtype=np.float32)
    return X


def kfold(n: int, k: int):
    """K contiguous test folds (whole runs of rows, like story-grouped folds)."""
    tests = np.array_split(np.arange(n), k)
    return [(np.setdiff1d(np.arange(n), t), t) for t in tests]


def block_flop(n: int, p: int, v: int, K: int, A: int, with_coef: bool) -> float:
    """FLOP of one block's big products (scores from sufficient statistics, test folds of
    more rows than p): C_te = X_te^T Y_te over all folds (2npv); per fold Q^T C_train and
    Q^T C_te (2 x 2p^2 v) and per alpha H Z_alpha (2p^2 v); the refit Q^T C and Q Z (4p^2 v)."""
    return 2 * n * p * v + K * (4 + 2 * A) * p * p * v + (4 * p * p * v if with_coef else 0)


def run(args) -> str:
    import warnings

    import dask.array as da
    from distributed import Client, LocalCluster, get_task_stream

    from scalenc.ridge import solve_ridge_cv

    # the X side travels once inside the graph (it is what every block shares)
    warnings.filterwarnings("ignore", message="Sending large graph")

    n, p, block, nb, K = args.n, args.p, args.voxel_block, args.blocks, args.folds
    v = block * nb
    alphas = np.logspace(0, 5, args.alphas)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scalenc-ridge-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "Y.zarr"
    t = time.perf_counter()
    X = write_problem(store, n, p, v, block)
    t_write = time.perf_counter() - t
    folds = kfold(n, K)

    # the read of one block alone (part of each block task below)
    import zarr

    t = time.perf_counter()
    _ = zarr.open_array(str(store), mode="r")[:, :block]
    t_read = time.perf_counter() - t
    del _

    env = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0, env=env) as cluster, Client(cluster) as client:
        client.run(_import_solver)  # imports are not block work
        base_rss = max(client.run(_worker_peak_rss).values())
        w_cpu0 = sum(client.run(_cpu_seconds).values())
        Yd = da.from_zarr(str(store))
        t0, c0 = time.perf_counter(), _cpu_seconds()
        with get_task_stream(client) as ts:
            res = solve_ridge_cv(X, Yd, alphas, folds, dtype="float32", return_coef=False, progress=False)
        t_total, client_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        worker_cpu = sum(client.run(_cpu_seconds).values()) - w_cpu0
        worker_rss = max(client.run(_worker_peak_rss).values())
    blocks = []
    first_start = math.inf
    for rec in ts.data:
        name = str(rec["key"][0] if isinstance(rec["key"], tuple) else rec["key"])
        comp = [s for s in rec["startstops"] if s["action"] == "compute"]
        if not comp:
            continue
        first_start = min(first_start, comp[0]["start"])
        if "ridge-block" in name or "dask_block" in name:
            blocks.append(sum(s["stop"] - s["start"] for s in comp))
    if len(blocks) != nb:
        raise RuntimeError(f"expected {nb} block tasks in the task stream, found {len(blocks)}")
    t_block = float(np.median(blocks))
    t_xside = t_total - sum(blocks)  # X side in the client + dispatch of the X side to the worker
    # core-seconds: what a dedicated machine spends (robust to other jobs sharing the cores)
    cpu_block = worker_cpu / nb
    load = os.getloadavg()[0]
    client_rss = peak_rss_bytes()
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)

    # ---- extrapolation to the target voxel count -------------------------------------------
    V = args.voxels
    nblocks = math.ceil(V / block)
    core_s_block = cpu_block
    core_h = nblocks * core_s_block / 3600
    flop_b = block_flop(n, p, block, K, alphas.size, with_coef=False)
    flop_b_coef = block_flop(n, p, block, K, alphas.size, with_coef=True)
    gflops = flop_b / t_block / 1e9
    gflops_core = flop_b / cpu_block / 1e9
    gpu_s_block = flop_b / (args.gpu_tflops * 1e12)
    y_bytes_block = n * block * 4
    gpu_s_block_io = max(gpu_s_block, y_bytes_block / (args.io_gbs * 1e9))
    today = datetime.date.today().isoformat()
    out = [f"### ridge at 10x LeBel: n={n}, p={p}, {alphas.size} alphas, {K} folds; measured on "
           f"{nb} blocks of {block} voxels, extrapolated to {V:,} voxels, {today}", "",
           f"machine: {machine()}; one Dask worker process, 1 task at a time, BLAS on 1 thread. "
           f"Other jobs shared these cores during the run (load average {load:.1f} at its end), so wall "
           "times are upper bounds; the plan below uses CPU core-seconds (user + system of the worker "
           "process), which sharing inflates much less.", "",
           "| measured | value |", "|---|---:|",
           f"| write Y slice ({n * v * 4 / 2**30:.2f} GiB float32) to zarr, chunk by chunk | {t_write:.0f} s |",
           f"| X side (X^T X, {K} fold downdates, {K + 1} eigh of {p}x{p}, in the client) + dispatch | "
           f"{t_xside:.0f} s wall, {client_cpu:.0f} core-s |",
           f"| per block of {block} voxels: median (min-max) wall of {nb} | {t_block:.1f} s "
           f"({min(blocks):.1f}-{max(blocks):.1f}) |",
           f"| per block of {block} voxels: CPU of the worker / {nb} | {cpu_block:.1f} core-s |",
           f"| of which reading the block from zarr (page cache) | {t_read:.1f} s |",
           f"| FLOP rate in a block ({flop_b:.2e} FLOP of big products): per wall second, per core-second | "
           f"{gflops:.0f}, {gflops_core:.0f} GFLOP/s |",
           f"| peak RSS of the worker (X side + one block; {base_rss / 2**30:.2f} GiB at start) | "
           f"{worker_rss / 2**30:.2f} GiB |",
           f"| peak RSS of the client (X in float64, eigendecompositions) | {client_rss / 2**30:.2f} GiB |",
           f"| distinct alphas chosen on the slice | {len(np.unique(res.best_alphas))} |", "",
           f"Extrapolated to {V:,} voxels = {nblocks} blocks (per-voxel work is independent, the X side "
           f"is shared): {core_h:.1f} core-hours of CPU at this machine's per-core rate, memory per worker "
           f"{worker_rss / 2**30:.1f} GiB whatever the voxel count (the client gathers only scores and "
           f"alphas: {(2 + K * alphas.size) * V * 8 / 2**30:.1f} GiB of float64 at {V:,} voxels).", "",
           f"| plan (workers x {args.plan_cores} cores) | blocks per worker | wall minutes | allocated core-hours |",
           "|---|---:|---:|---:|"]
    for w in args.plan_workers:
        per = math.ceil(nblocks / w)
        # the X side once (client, plan_cores cores), then each worker's share of the blocks
        minutes = (client_cpu + per * core_s_block) / args.plan_cores / 60
        out.append(f"| {w} x {args.plan_cores} | {per} | {minutes:.1f} | {w * args.plan_cores * minutes / 60:.1f} |")
    out += ["", f"Assumes BLAS scales linearly from 1 to {args.plan_cores} cores per worker and that "
            "workers read their blocks from a shared filesystem at "
            f"{args.io_gbs:g} GB/s each; the X side is computed once and sent to every worker.", "",
            f"**GPU: an estimate, not a measurement** (no GPU on this machine): at a sustained "
            f"{args.gpu_tflops:g} TFLOP/s for the float32/TF32 products ({args.gpu_note}), one block is "
            f"{gpu_s_block:.2f} s of compute and {y_bytes_block / 1e9:.2f} GB of Y to read "
            f"({y_bytes_block / (args.io_gbs * 1e9):.2f} s at {args.io_gbs:g} GB/s), so "
            f"{gpu_s_block_io:.2f} s per block when I/O and compute overlap: "
            f"{nblocks * gpu_s_block_io / 3600:.3f} GPU-hours for {V:,} voxels "
            f"(+{(flop_b_coef / flop_b - 1) * 100:.0f} % FLOP with the weights refit), e.g. "
            + ", ".join(f"{g} GPU(s): {nblocks * gpu_s_block_io / g / 60:.1f} min" for g in (1, 4, 8))
            + f" plus the X side once ({K + 1} eigh of {p}x{p} float64 matrices, seconds on a GPU).", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=28000, help="TRs (LeBel's training rows: ~28,000)")
    ap.add_argument("-p", type=int, default=3072, help="features after delays (768 x 4)")
    ap.add_argument("--voxels", type=int, default=1_000_000, help="voxel count to extrapolate to")
    ap.add_argument("--voxel-block", type=int, default=2048)
    ap.add_argument("--blocks", type=int, default=3, help="blocks measured")
    ap.add_argument("--alphas", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--plan-cores", type=int, default=8)
    ap.add_argument("--plan-workers", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--gpu-tflops", type=float, default=50.0,
                    help="sustained TFLOP/s assumed for the GPU estimate (default 50)")
    ap.add_argument("--gpu-note", default="~1/3 of an A100's dense TF32 peak of 156, ~1/10 of an H100's",
                    help="what the assumed rate is, printed with it")
    ap.add_argument("--io-gbs", type=float, default=2.0, help="read rate of Y per worker, GB/s")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    emit(run(args), args.record)


if __name__ == "__main__":
    main()
