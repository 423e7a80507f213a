"""scalenc: voxelwise encoding models of fMRI responses to stories."""
from __future__ import annotations

__version__ = "0.1.0"
