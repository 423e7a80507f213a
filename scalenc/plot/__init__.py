"""Figures of encoding-model results: brain maps (own fsaverage renderer, nilearn, pycortex), ROI
summaries, the run report.

- :class:`BrainSpace`: where voxels sit (fsaverage surface, standard-space volume, or a
  subject-space volume without affine), read from an assembly's ``voxels``
  (:meth:`BrainSpace.from_voxels`) or built from a mask (:meth:`BrainSpace.from_mask`).
- :func:`surface_map` (left/right x lateral/medial on fsaverage5), :func:`volume_map`
  (glass brain and slices), :func:`mosaic` (slices of subject-space data), :func:`flatmap`
  (pycortex, optional), :func:`brain_map` (whichever the layout calls for).
- :func:`roi_summary` / :func:`plot_roi_summary`: median values per ROI label.
- :func:`report`: ``report.png``, ``maps/*.png``, ``roi_summary.csv``, the interactive
  ``report.html`` (:mod:`.interactive`) and the maps as NIfTI / GIFTI / .npy under ``export/``
  (:func:`export_maps`, :mod:`.export`) of a saved run.

nilearn's package ships the fsaverage5 meshes and the MNI152 template: nothing is downloaded.
"""
from .maps import (BrainSpace, MapError, brain_map, color_limit, flatmap, mask_from_nifti, mosaic,
                   save_figure, significant_values, split_maps, surface_map, volume_map)
from .export import MapSpec, export_maps, run_maps
from .report import RunSummary, headline, report, summary_panels
from .roi import plot_roi_summary, roi_summary

__all__ = ["BrainSpace", "MapError", "MapSpec", "export_maps", "run_maps",
           "RunSummary", "brain_map", "color_limit", "flatmap", "mask_from_nifti",
           "mosaic", "plot_roi_summary", "report", "roi_summary", "save_figure", "significant_values",
           "split_maps", "summary_panels", "headline", "surface_map", "volume_map"]
