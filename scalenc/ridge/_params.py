"""scikit-learn's parameter protocol for the ridge estimators: ``get_params``,
``set_params`` and a ``repr`` over the constructor's arguments (read from its signature),
and the fitted-input check of ``predict``."""
from __future__ import annotations

import inspect

import numpy as np


class EstimatorParams:
    """Mixin: the constructor's arguments, stored under their own names, are the parameters."""

    @classmethod
    def _param_names(cls) -> tuple[str, ...]:
        return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        names = self._param_names()
        for k, v in params.items():
            if k not in names:
                raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}; valid: {sorted(names)}")
            setattr(self, k, v)
        return self

    def _check_X(self, X) -> np.ndarray:
        """``X`` as an array, checked against the fit (fitted, same number of features)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(X, Y) first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, got shape {X.shape}")
        return X

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v is not None)
        return f"{type(self).__name__}({args})"
