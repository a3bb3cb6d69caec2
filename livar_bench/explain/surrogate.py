"""Surrogate model of the merge outcome and its SHAP attributions.

A tree ensemble (scikit-learn gradient boosting by default, a random forest as the alternative) is
fitted on a seeded training part of the collected samples and scored (R^2) on the rest; exact tree
SHAP values (``shap.TreeExplainer``) of that model are then computed for every sample. ``shap`` is
imported here only, so the rest of the package works without it (``pip install livar-bench[explain]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from livar_bench.errors import BenchError

# Features of the surrogate. The first two are the ones LIVAR's rule reads (signal quantile positions);
# the others are context whose effect the attribution separates from the signals'.
SIGNAL_FEATURES = ("a_pos", "b_pos")
CONTEXT_FEATURES = ("depth", "kind_code", "client_share")
FEATURES = SIGNAL_FEATURES + CONTEXT_FEATURES
MIN_SAMPLES = 12


@dataclass(frozen=True)
class SurrogateSettings:
    """Surrogate model choice and its fitting protocol."""

    model: Literal["gbr", "rf"] = "gbr"
    test_fraction: float = 0.25
    n_estimators: int = 300
    max_depth: int = 3
    learning_rate: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in ("gbr", "rf"):
            raise BenchError(f"--surrogate must be gbr or rf, got {self.model!r}")
        if not 0 < self.test_fraction < 1:
            raise BenchError(f"surrogate test fraction must be in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class Attribution:
    """SHAP values of the fitted surrogate for every sample, and how well the surrogate fits."""

    features: tuple[str, ...]
    values: np.ndarray  # [n, len(features)] SHAP value of each feature for each sample
    expected_value: float  # SHAP base value (the model's mean prediction)
    prediction: np.ndarray  # [n] surrogate predictions
    r2_train: float
    r2_test: float
    n_train: int
    n_test: int
    model: str


def feature_matrix(table: pd.DataFrame, features: tuple[str, ...] = FEATURES) -> np.ndarray:
    """The surrogate's inputs [n, f] as float64, with a clear error for missing columns."""
    missing = [f for f in features if f not in table.columns]
    if missing:
        raise BenchError(f"sample table lacks columns {missing}; recollect with `livar-bench explain`")
    return table[list(features)].to_numpy(dtype=np.float64)


def fit_and_explain(table: pd.DataFrame, settings: SurrogateSettings = SurrogateSettings(),
                    features: tuple[str, ...] = FEATURES, target: str = "outcome") -> Attribution:
    """Fit the surrogate on ``features -> target`` and attribute its predictions with tree SHAP."""
    try:
        import shap
    except ImportError:
        raise BenchError("`livar-bench explain` needs shap: pip install 'livar-bench[explain]'") from None
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.metrics import r2_score

    if len(table) < MIN_SAMPLES:
        raise BenchError(f"only {len(table)} samples to fit the surrogate (need {MIN_SAMPLES}); "
                         "raise --clients, --rounds or --probe-pairs")
    x = feature_matrix(table, features)
    y = table[target].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(settings.seed)
    perm = rng.permutation(len(y))
    n_test = max(2, int(round(settings.test_fraction * len(y))))
    test, train = perm[:n_test], perm[n_test:]
    if settings.model == "gbr":
        model = GradientBoostingRegressor(n_estimators=settings.n_estimators, max_depth=settings.max_depth,
                                          learning_rate=settings.learning_rate, subsample=0.8,
                                          random_state=settings.seed)
    else:
        model = RandomForestRegressor(n_estimators=settings.n_estimators, min_samples_leaf=3, n_jobs=1,
                                      random_state=settings.seed)
    model.fit(x[train], y[train])
    explainer = shap.TreeExplainer(model)
    values = np.asarray(explainer.shap_values(x), dtype=np.float64).reshape(len(y), len(features))
    expected = float(np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)[0])
    prediction = model.predict(x)
    return Attribution(
        features=tuple(features), values=values, expected_value=expected, prediction=prediction,
        r2_train=float(r2_score(y[train], prediction[train])), r2_test=float(r2_score(y[test], prediction[test])),
        n_train=len(train), n_test=len(test), model=settings.model,
    )


def shap_frame(table: pd.DataFrame, attribution: Attribution) -> pd.DataFrame:
    """Samples' identifying columns, features, SHAP values (``shap_<feature>``) and predictions."""
    ids = [c for c in ("round", "client", "module") if c in table.columns]
    frame = table[ids + list(attribution.features) + ["outcome"]].reset_index(drop=True).copy()
    for j, name in enumerate(attribution.features):
        frame[f"shap_{name}"] = attribution.values[:, j]
    frame["shap_base"] = attribution.expected_value
    frame["prediction"] = attribution.prediction
    return frame
