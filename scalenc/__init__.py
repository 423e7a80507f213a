"""scalenc: voxelwise encoding models of fMRI responses to stories.

The LITcoder tutorials' names are importable from the package itself::

    from scalenc import load_assembly, FeatureExtractorFactory, Downsampler, NestedCVModel, AbstractTrainer

and ``scalenc.sweep(...)`` fits subjects x models x layers with the stimulus side shared.
"""
from __future__ import annotations

from ._version import __version__  # noqa: E402

from .align import Downsampler  # noqa: E402
from .assembly import load_assembly  # noqa: E402
from .features import FeatureExtractorFactory  # noqa: E402
from .models import NestedCVModel  # noqa: E402
from .trainer import AbstractTrainer  # noqa: E402
from .engine import predict  # noqa: E402
from .sweep import sweep  # noqa: E402  (the module stays importable: from scalenc.sweep import SweepResult)

__all__ = ["AbstractTrainer", "Downsampler", "FeatureExtractorFactory", "NestedCVModel", "__version__",
           "load_assembly", "predict", "sweep"]
