"""Encoding models with the tutorials' interface (``NestedCVModel``).

The real home is :mod:`scalenc.models.nested_cv`, the module path the LITcoder tutorials
import (``encoding.models.nested_cv``).
"""
from .nested_cv import NestedCVModel

__all__ = ["NestedCVModel"]
