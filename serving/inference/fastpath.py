"""A fast predict for the trained pipeline: no DataFrame, no per-tree calls, no OpenMP regions.

scikit-learn's ``Pipeline.predict`` on one row costs milliseconds: the ColumnTransformer works
through pandas, and HistGradientBoosting calls a Cython predictor once per tree, each call
opening an OpenMP parallel region. The trees themselves need microseconds. This module reads
the *fitted* pipeline (the exact object MLflow loaded) once and then

* encodes cars a column at a time into a float64 matrix (dict look-ups for categories),
* walks all trees of all rows at once with NumPy (one gather per tree level), for small batches,
* hands large batches to the booster's own Cython predictor on that matrix (no pandas).

Both paths reproduce ``pipeline.predict`` exactly (same node decisions, same summation order);
a test checks it on thousands of rows. :func:`compile_pipeline` returns None for a pipeline of
another shape, and the caller then uses ``pipeline.predict``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, cast

import numpy as np

from serving.inference.cars import Cars
from serving.inference.features import FEATURE_NAMES, Row

# Largest batch walked with NumPy; bigger batches use the booster's Cython predictor, which
# wins once per-call overhead is amortised (measured by benchmarks/fastpath.py).
NUMPY_WALK_MAX_ROWS = 16


@dataclass(frozen=True)
class _Forest:
    """All trees of a fitted HistGradientBoostingRegressor flattened into arrays."""

    roots: np.ndarray  # (T,) index of each tree's root in the node arrays
    feature: np.ndarray  # (N,) feature index of each node
    threshold: np.ndarray  # (N,) numeric threshold (go left if x <= threshold)
    missing_left: np.ndarray  # (N,) bool: NaN / unknown category goes left
    left: np.ndarray  # (N,) child indices; leaves point to themselves
    right: np.ndarray
    is_cat: np.ndarray  # (N,) bool
    cat_row: np.ndarray  # (N,) row of ``cat_left`` for categorical splits (0 otherwise)
    cat_left: np.ndarray  # (C, 256) bool: category code goes left
    known: np.ndarray  # (F, 256) bool: category code was seen in training
    value: np.ndarray  # (N,) leaf values
    depth: int  # deepest leaf
    baseline: float


def _bits(bitset: np.ndarray) -> np.ndarray:
    """Expand an 8 x uint32 bitset into a 256-entry bool table."""
    words = np.asarray(bitset, dtype=np.uint32)
    return ((words[np.arange(256) // 32] >> (np.arange(256) % 32).astype(np.uint32)) & 1).astype(
        bool
    )


def _flatten(booster: Any, n_features: int) -> _Forest:
    known_bitsets, f_idx_map = booster._bin_mapper.make_known_categories_bitsets()
    known = np.ones((n_features, 256), dtype=bool)
    for f in range(n_features):
        if booster.is_categorical_ is not None and booster.is_categorical_[f]:
            known[f] = _bits(known_bitsets[f_idx_map[f]])

    roots, parts, cat_tables = [], [], [np.zeros(256, dtype=bool)]
    offset, depth = 0, 0
    for (predictor,) in booster._predictors:
        nodes = predictor.nodes
        n = len(nodes)
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(offset, offset + n)
        left = np.where(leaf, own, nodes["left"].astype(np.int64) + offset)
        right = np.where(leaf, own, nodes["right"].astype(np.int64) + offset)
        is_cat = nodes["is_categorical"].astype(bool) & ~leaf
        cat_row = np.zeros(n, dtype=np.int64)
        for i in np.flatnonzero(is_cat):
            cat_row[i] = len(cat_tables)
            cat_tables.append(_bits(predictor.raw_left_cat_bitsets[nodes["bitset_idx"][i]]))
        parts.append(
            (
                nodes["feature_idx"].astype(np.int64),
                nodes["num_threshold"].astype(np.float64),
                nodes["missing_go_to_left"].astype(bool),
                left,
                right,
                is_cat,
                cat_row,
                nodes["value"].astype(np.float64),
            )
        )
        roots.append(offset)
        offset += n
        depth = max(depth, int(nodes["depth"].max()))

    cols = list(zip(*parts, strict=True))
    return _Forest(
        roots=np.asarray(roots, dtype=np.int64),
        feature=np.concatenate(cols[0]),
        threshold=np.concatenate(cols[1]),
        missing_left=np.concatenate(cols[2]),
        left=np.concatenate(cols[3]),
        right=np.concatenate(cols[4]),
        is_cat=np.concatenate(cols[5]),
        cat_row=np.concatenate(cols[6]),
        cat_left=np.stack(cat_tables),
        known=known,
        value=np.concatenate(cols[7]),
        depth=depth,
        baseline=float(np.asarray(booster._baseline_prediction).ravel()[0]),
    )


class CompiledPipeline:
    """The fitted pipeline's predict, reimplemented for speed; same results."""

    def __init__(
        self,
        columns: list[str],
        codes: dict[str, dict[str, float]],
        booster: Any,
        forest: _Forest,
        inverse: Any,
    ) -> None:
        self.columns = columns  # input columns in the order the trees see them
        self._codes = codes
        # Where each input column comes from: its position among the features, its codes.
        self._sources = [(FEATURE_NAMES.index(name), codes.get(name)) for name in columns]
        self._booster = booster
        self._forest = forest
        self._inverse = inverse

    def encode(self, rows: Sequence[Row]) -> np.ndarray:
        """Cars (:class:`~serving.inference.cars.Cars`, or rows) -> the booster's float64 input
        matrix, a column at a time.

        Missing (None) values and unknown categories become NaN, as the fitted OrdinalEncoder
        does.
        """
        cars = Cars.from_rows(rows)
        x = np.empty((cars.n, len(self.columns)), dtype=np.float64)
        for j, (position, codes) in enumerate(self._sources):
            values = cars.columns[position]
            if codes is not None:
                values = list(map(cast(Any, codes.get), values, repeat(math.nan, cars.n)))
            # None becomes NaN in a float64 conversion.
            x[:, j] = np.array(values, dtype=np.float64)
        return x

    def _walk(self, x: np.ndarray) -> np.ndarray:
        f = self._forest
        n = x.shape[0]
        idx = np.broadcast_to(f.roots, (n, len(f.roots))).copy()
        rows = np.arange(n)[:, None]
        for _ in range(f.depth):
            feat = f.feature[idx]
            xv = x[rows, feat]
            nan = np.isnan(xv)
            go_left = xv <= f.threshold[idx]
            cat = f.is_cat[idx]
            if cat.any():
                # As the booster: a negative code or one not seen in training counts as missing.
                negative = xv < 0
                code = np.where(nan | negative, 0, xv).astype(np.intp) & 255
                cat_left = f.cat_left[f.cat_row[idx], code]
                unknown = negative | (~cat_left & ~f.known[feat, code])
                go_left = np.where(cat, cat_left, go_left)
                nan = nan | (cat & unknown)
            go_left = np.where(nan, f.missing_left[idx], go_left)
            idx = np.where(go_left, f.left[idx], f.right[idx])
        # Sum in the booster's order, baseline then tree 1, 2, ...: cumsum is strictly
        # sequential (sum() would pair terms and differ in the last bits).
        leaves = np.empty((n, len(f.roots) + 1), dtype=np.float64)
        leaves[:, 0] = f.baseline
        leaves[:, 1:] = f.value[idx]
        raw: np.ndarray = leaves.cumsum(axis=1)[:, -1]
        return raw

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Predict prices for an encoded matrix (see :meth:`encode`)."""
        if x.shape[0] <= NUMPY_WALK_MAX_ROWS:
            raw = self._walk(x)
        else:
            # The booster's Cython predictor on the already-encoded matrix (its public
            # predict would re-run its internal encoder through pandas).
            out = np.zeros((x.shape[0], 1), dtype=np.float64, order="F")
            out += self._forest.baseline
            self._booster._predict_iterations(
                x, self._booster._predictors, out, is_binned=False, n_threads=1
            )
            raw = out[:, 0]
        prices: np.ndarray = self._inverse(raw)
        return prices

    def predict(self, rows: Sequence[Row]) -> np.ndarray:
        """Predict prices for cars (or rows)."""
        return self.predict_matrix(self.encode(rows))


def _outer_columns(columns_step: Any) -> tuple[list[str], dict[str, dict[str, float]]] | None:
    """Columns in the order the pipeline's ColumnTransformer outputs them, and category codes."""
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    columns: list[str] = []
    codes: dict[str, dict[str, float]] = {}
    for name, transformer, cols in columns_step.transformers_:
        if name == "remainder" and transformer == "drop":
            continue
        if isinstance(transformer, OrdinalEncoder):
            if not (
                transformer.handle_unknown == "use_encoded_value"
                and np.isnan(transformer.unknown_value)
                and np.isnan(transformer.encoded_missing_value)
            ):
                return None
            for col, cats in zip(cols, transformer.categories_, strict=True):
                codes[col] = {str(c): float(i) for i, c in enumerate(cats) if isinstance(c, str)}
        elif not (
            transformer == "passthrough"
            or (isinstance(transformer, FunctionTransformer) and transformer.func is None)
        ):
            return None
        columns.extend(cols)
    return columns, codes


def _booster_columns(
    booster: Any, columns: list[str], codes: dict[str, dict[str, float]]
) -> tuple[list[str], dict[str, dict[str, float]]] | None:
    """Apply the booster's own internal re-encoding of categorical features, if it has one.

    HistGradientBoosting (scikit-learn >= 1.4) ordinal-encodes the categorical columns it is
    given once more, into the codes seen in training, and moves them first.
    """
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    inner = getattr(booster, "_preprocessor", None)
    if inner is None:
        return columns, codes
    ordered: list[str] = []
    final = dict(codes)
    for name, transformer, mask in inner.transformers_:
        if name == "remainder" and transformer == "drop":
            continue
        picked = [c for c, keep in zip(columns, mask, strict=True) if keep]
        if isinstance(transformer, OrdinalEncoder):
            for col, seen in zip(picked, transformer.categories_, strict=True):
                position = {float(v): float(i) for i, v in enumerate(seen) if v == v}
                final[col] = {
                    s: position[c] for s, c in codes.get(col, {}).items() if c in position
                }
        elif not (isinstance(transformer, FunctionTransformer) or transformer == "passthrough"):
            return None
        ordered.extend(picked)
    return ordered, final


def compile_pipeline(pipeline: Any) -> CompiledPipeline | None:
    """Compile ``Pipeline([ColumnTransformer(OrdinalEncoder, passthrough), [log-target] HGB])``.

    Returns None when the pipeline has any other shape.
    """
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    columns_step, regressor = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(columns_step, ColumnTransformer):
        return None
    outer = _outer_columns(columns_step)
    if outer is None:
        return None

    inverse: Any
    booster = regressor
    if isinstance(regressor, TransformedTargetRegressor):
        booster = regressor.regressor_
        if regressor.inverse_func is np.exp:
            inverse = np.exp
        else:
            transformer = regressor.transformer_
            inverse = lambda raw: transformer.inverse_transform(raw.reshape(-1, 1)).ravel()  # noqa: E731
    else:
        inverse = lambda raw: raw  # noqa: E731
    if not isinstance(booster, HistGradientBoostingRegressor):
        return None
    if booster.n_trees_per_iteration_ != 1 or booster.loss != "squared_error":
        return None
    inner = _booster_columns(booster, *outer)
    if inner is None:
        return None
    columns, codes = inner
    if not set(columns) <= set(FEATURE_NAMES):
        return None
    return CompiledPipeline(columns, codes, booster, _flatten(booster, len(columns)), inverse)
