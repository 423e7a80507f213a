"""Dask clusters: :func:`client` (local, address, SLURM/PBS via dask-jobqueue, CUDA)."""
from .cluster import client, cuda_cluster, has_gpu_workers, jobqueue_cluster, local_cluster, scale_settings

__all__ = ["client", "cuda_cluster", "has_gpu_workers", "jobqueue_cluster", "local_cluster", "scale_settings"]
