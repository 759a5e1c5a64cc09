"""Regress a target loss on mixture weights: the model registry, cross-validation, and the
fitted-model folder that `predict` and `simulate` load.

Every regressor takes raw mixture weights (rows summing to 1) and applies its own transform,
so callers never need to know which features a model uses. Hyper-parameters are chosen on
the runs a model is fitted on and nowhere else: ridge's alpha by an inner 5-fold CV, the
Gaussian process's kernel by its marginal likelihood. Under `cross_validate` each fold
therefore tunes on its own training runs, and the out-of-fold figures are honest.

Models (`MODELS`; `DEFAULT_MODEL` is `gp`, the most accurate on RegMix's 512 runs):
- `linear`: ridge on the weights, alpha from {1e-3 … 1e3} by 5-fold CV (the paper's).
- `lightgbm`: the paper's settings, 1000 trees at learning rate 1e-2, no early stopping.
- `mixlaw`: Ye et al.'s data-mixing law, loss = c + k·exp(Σ t_j w_j), by least squares.
- `gp`: a Gaussian process on log(w + 1e-3), ARD RBF + white noise, length scales started
  from the spread of each feature so the optimiser does not stall on small run counts.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from regmix import __version__
from regmix.errors import RegmixError
from regmix.files import atomic_path, read_table, write_json, write_table
from regmix.mixtures import WEIGHT, check_weights, mixture_domains, mixture_table, weight_columns
from regmix.runs import (
    REGMIX_INDEX,
    REGMIX_MIXTURE,
    Target,
    loss_domains,
    parse_target,
    read_runs,
    regmix_mixture_table,
    status_counts,
    usable_runs,
)

MODEL_FILE = "model.joblib"
SPEC_FILE = "model.json"
TRAIN_FILE = "train.parquet"
CV_FILE = "cv.parquet"
METRICS_FILE = "metrics.json"

PREDICT_BATCH = 16_384
"""Rows scored per call when prediction is spread over threads."""
KERNEL_BLOCK = 4_194_304
"""Most kernel entries (candidates × runs) held at once per thread: 32 MiB of float64."""


def available_threads() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity, unlike cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All squared Euclidean distances between rows of a and rows of b, as one matmul."""
    d2 = (a * a).sum(axis=1)[:, None] - 2.0 * (a @ b.T)
    d2 += (b * b).sum(axis=1)[None, :]
    return np.maximum(d2, 0.0, out=d2)


@contextmanager
def quiet_convergence() -> Iterator[None]:
    """Silence scikit-learn's ConvergenceWarning: a GP length scale at its upper bound means
    the domain is irrelevant to the target, which is an answer, not a failure. Enter it also
    around thread pools: warning filters are process-wide and not thread-safe to toggle."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@contextmanager
def parallel(threads: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool whose workers run single-threaded BLAS, so they do not oversubscribe."""
    from threadpoolctl import threadpool_limits

    with (
        quiet_convergence(),
        threadpool_limits(1, user_api="blas"),
        ThreadPoolExecutor(threads) as pool,
    ):
        yield pool


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def parallel_map(
    fn: Callable[[_Item], _Result], items: Iterable[_Item], threads: int
) -> list[_Result]:
    """`fn` of each item, in order: in this thread when `threads` <= 1, else on a `parallel`
    pool of that many threads."""
    if threads <= 1:
        return [fn(item) for item in items]
    with parallel(threads) as pool:
        return list(pool.map(fn, items))


# --- the regressors -------------------------------------------------------------------------


@dataclass
class Regressor(ABC):
    """A model of target loss as a function of mixture weights (rows summing to 1)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    seed: int = 0
    """Seed for whatever randomness the model has (CV shuffles, tree sampling, restarts)."""

    @abstractmethod
    def fit(self, weights: np.ndarray, target: np.ndarray) -> Regressor: ...

    @abstractmethod
    def predict(self, weights: np.ndarray) -> np.ndarray: ...

    def hyperparameters(self) -> dict[str, Any]:
        """What was chosen while fitting, for metrics.json."""
        return {}

    def unfitted(self) -> Regressor:
        """A fresh model with the same settings (for CV folds)."""
        return type(self)(**{f.name: getattr(self, f.name) for f in fields(self) if f.init})

    def warm_unfitted(self) -> Regressor:
        """A fresh model whose hyper-parameter search starts where this fitted one ended; for
        bootstrap refits, never for CV (that would leak the held-out runs)."""
        return self.unfitted()


@dataclass
class RidgeRegression(Regressor):
    name: ClassVar[str] = "linear"
    summary: ClassVar[str] = "ridge on the weights, alpha by inner 5-fold CV (RegMix's linear)"
    alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 3, 7))
    """Candidate ridge penalties; the paper's {1e-3 … 1e3}."""
    inner_folds: int = 5
    """Folds of the inner CV that picks alpha on the training runs."""

    def fit(self, weights: np.ndarray, target: np.ndarray) -> RidgeRegression:
        from sklearn.linear_model import RidgeCV
        from sklearn.model_selection import KFold

        folds = KFold(min(self.inner_folds, len(target)), shuffle=True, random_state=self.seed)
        self.model_ = RidgeCV(alphas=self.alphas, cv=folds).fit(weights, target)
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        return self.model_.predict(weights)

    def hyperparameters(self) -> dict[str, Any]:
        return {"alpha": float(self.model_.alpha_)}


@dataclass
class LightGBMRegression(Regressor):
    name: ClassVar[str] = "lightgbm"
    summary: ClassVar[str] = "LightGBM with RegMix's settings, no early stopping"
    n_estimators: int = 1000
    """Boosting rounds, all of them: early stopping on evaluation data would leak it."""
    learning_rate: float = 1e-2

    def fit(self, weights: np.ndarray, target: np.ndarray) -> LightGBMRegression:
        from lightgbm import LGBMRegressor

        # One thread per model: callers parallelise across folds and prediction batches.
        self.model_ = LGBMRegressor(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            random_state=self.seed,
            n_jobs=1,
            verbose=-1,
        ).fit(weights, target)
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        return self.model_.predict(weights)

    def hyperparameters(self) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "learning_rate": self.learning_rate}


@dataclass
class MixingLaw(Regressor):
    """Ye et al. 2024: loss = c + k·exp(Σ t_j w_j). Because the weights sum to 1, k is the same
    as adding log k to every t_j, so it is folded into t and reported as 1."""

    name: ClassVar[str] = "mixlaw"
    summary: ClassVar[str] = "data-mixing law c + k·exp(Σ t_j w_j), least squares (Ye et al.)"
    starts: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    """Initial gaps between c and the lowest loss, in target standard deviations."""

    def fit(self, weights: np.ndarray, target: np.ndarray) -> MixingLaw:
        from scipy.optimize import least_squares

        spread = float(target.std()) or 1.0

        def residuals(theta: np.ndarray) -> np.ndarray:
            return theta[0] + np.exp(np.minimum(weights @ theta[1:], 50.0)) - target

        def jacobian(theta: np.ndarray) -> np.ndarray:
            growth = np.exp(np.minimum(weights @ theta[1:], 50.0))
            return np.column_stack([np.ones_like(target), growth[:, None] * weights])

        best = None
        for gap in self.starts:
            c0 = float(target.min()) - gap * spread
            t0 = np.linalg.lstsq(weights, np.log(target - c0), rcond=None)[0]
            fit = least_squares(residuals, np.r_[c0, t0], jac=jacobian, x_scale="jac")
            if best is None or fit.cost < best.cost:
                best = fit
        self.c_, self.t_ = float(best.x[0]), best.x[1:]
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        return self.c_ + np.exp(np.minimum(weights @ self.t_, 50.0))

    def hyperparameters(self) -> dict[str, Any]:
        return {"c": self.c_, "k": 1.0, "t": [float(t) for t in self.t_]}


@dataclass
class GaussianProcess(Regressor):
    """GP regression on log-weights with an ARD RBF kernel and white noise.

    Prediction does not go through scikit-learn: it needs only the length scales, the
    training points and the dual coefficients, and computing the kernel as one matmul per
    batch is several times faster than `GaussianProcessRegressor.predict` on 1M candidates.
    """

    name: ClassVar[str] = "gp"
    summary: ClassVar[str] = "Gaussian process on log(w + offset), ARD RBF + white noise"
    offset: float = 1e-3
    """Added before the log so that absent domains (w = 0) map to a finite feature."""
    restarts: int = 0
    """Extra optimiser starts from random kernel parameters (the data-based start suffices)."""
    initial_kernel: Any = field(default=None, repr=False)
    """Kernel to start the marginal-likelihood search from; None starts from the data."""

    def __post_init__(self) -> None:
        if self.offset <= 0:
            raise RegmixError("gp.offset: must be > 0")

    def features(self, weights: np.ndarray) -> np.ndarray:
        return np.log(weights + self.offset)

    def _data_kernel(self, x: np.ndarray):
        from sklearn.gaussian_process.kernels import RBF, WhiteKernel
        from sklearn.gaussian_process.kernels import ConstantKernel as Constant

        spread = x.std(axis=0)
        length = np.where(spread > 0, spread, 1.0) * np.sqrt(x.shape[1])
        return Constant(1.0, (1e-2, 1e2)) * RBF(length, (1e-2, 1e5)) + WhiteKernel(0.1, (1e-6, 1.0))

    def fit(self, weights: np.ndarray, target: np.ndarray) -> GaussianProcess:
        from sklearn.gaussian_process import GaussianProcessRegressor

        x = self.features(weights)
        self.y_mean_ = float(target.mean())
        self.y_scale_ = float(target.std()) or 1.0
        kernel = self.initial_kernel if self.initial_kernel is not None else self._data_kernel(x)
        gp = GaussianProcessRegressor(
            kernel, n_restarts_optimizer=self.restarts, random_state=self.seed
        )
        with quiet_convergence():
            gp.fit(x, (target - self.y_mean_) / self.y_scale_)
        self.kernel_ = gp.kernel_
        self.amplitude_ = float(gp.kernel_.k1.k1.constant_value)
        self.length_scale_ = np.broadcast_to(gp.kernel_.k1.k2.length_scale, x.shape[1]).copy()
        self.noise_ = float(gp.kernel_.k2.noise_level)
        self.z_train_ = x / self.length_scale_
        self.dual_ = np.asarray(gp.alpha_, dtype=float).ravel() * self.amplitude_
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        z = self.features(weights) / self.length_scale_
        rows = max(256, KERNEL_BLOCK // len(self.z_train_))
        out = np.empty(len(z))
        for start in range(0, len(z), rows):
            k = squared_distances(z[start : start + rows], self.z_train_)
            k *= -0.5
            np.exp(k, out=k)
            out[start : start + rows] = k @ self.dual_
        return out * self.y_scale_ + self.y_mean_

    def warm_unfitted(self) -> GaussianProcess:
        fresh = self.unfitted()
        fresh.initial_kernel = self.kernel_
        return fresh

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "amplitude": self.amplitude_,
            "noise": self.noise_,
            "length_scale": [float(s) for s in self.length_scale_],
            "kernel": str(self.kernel_),
        }


MODELS: dict[str, type[Regressor]] = {
    cls.name: cls for cls in (RidgeRegression, LightGBMRegression, MixingLaw, GaussianProcess)
}
DEFAULT_MODEL = GaussianProcess.name


def make_model(name: str, seed: int = 0) -> Regressor:
    if name not in MODELS:
        raise RegmixError(f"--model: unknown model {name!r} (expected one of: {', '.join(MODELS)})")
    return MODELS[name](seed=seed)


# --- scoring many mixtures ------------------------------------------------------------------


def predict_weights(
    model: Regressor, weights: np.ndarray, threads: int = 1, batch: int = PREDICT_BATCH
) -> np.ndarray:
    """Score rows in batches across threads; numpy, BLAS and LightGBM release the GIL, and
    BLAS is held to one thread per batch so the threads do not fight over the cores."""
    starts = range(0, len(weights), batch)
    if len(starts) <= 1:
        threads = 1  # one batch gains nothing from a pool, and keeps its multi-threaded BLAS
    chunks = parallel_map(lambda i: model.predict(weights[i : i + batch]), starts, threads)
    return np.concatenate(chunks) if chunks else np.empty(0)


# --- cross-validation -----------------------------------------------------------------------


def fold_ids(n_runs: int, folds: int, seed: int) -> np.ndarray:
    """Which fold holds out each run; the same (n_runs, folds, seed) gives the same folds for
    every model, so their CV figures compare like with like."""
    from sklearn.model_selection import KFold

    if folds < 2:
        raise RegmixError(f"--folds: need at least 2 (got {folds})")
    if n_runs < folds:
        raise RegmixError(f"{n_runs} usable run(s) cannot be split into {folds} folds")
    ids = np.empty(n_runs, dtype=int)
    for fold, (_, held_out) in enumerate(
        KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n_runs))
    ):
        ids[held_out] = fold
    return ids


def cross_validate(
    model: Regressor, weights: np.ndarray, target: np.ndarray, folds: np.ndarray, threads: int = 1
) -> np.ndarray:
    """Out-of-fold predictions: each fold is predicted by a fresh model fitted on the others."""

    def held_out_predictions(fold: int) -> tuple[np.ndarray, np.ndarray]:
        train, test = folds != fold, folds == fold
        fitted = model.unfitted().fit(weights[train], target[train])
        return test, fitted.predict(weights[test])

    predictions = np.empty(len(target))
    for test, predicted in parallel_map(held_out_predictions, sorted(set(folds.tolist())), threads):
        predictions[test] = predicted
    return predictions


def cv_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """Spearman (what ranking mixtures needs), Pearson and MSE of out-of-fold predictions."""
    from scipy.stats import pearsonr, spearmanr

    def finite(value: float) -> float | None:
        return float(value) if np.isfinite(value) else None

    constant = np.ptp(predicted) == 0 or np.ptp(actual) == 0
    return {
        "spearman": None if constant else finite(spearmanr(actual, predicted).statistic),
        "pearson": None if constant else finite(pearsonr(actual, predicted).statistic),
        "mse": finite(np.mean((predicted - actual) ** 2)),
    }


# --- fitting and the model folder -----------------------------------------------------------


@dataclass
class TrainingData:
    """The usable runs of a runs table, reduced to what a regressor sees."""

    runs: list[str]
    domains: list[str]
    weights: np.ndarray
    target: np.ndarray
    excluded: dict[str, int]
    """Runs left out, counted by status."""


def training_data(runs_path: str | os.PathLike, target: str) -> tuple[TrainingData, Target]:
    """Read a runs table, keep the runs with status ok, and compute the target for them."""
    source = str(runs_path)
    runs = read_runs(runs_path)
    parsed = parse_target(target, loss_domains(runs), source)
    usable, excluded = usable_runs(runs)
    if usable.empty:
        raise RegmixError(f"{source}: no run has status 'ok' ({status_counts(excluded)})")
    domains = mixture_domains(runs)
    data = TrainingData(
        runs=usable["run"].tolist(),
        domains=domains,
        weights=usable[[WEIGHT + d for d in domains]].to_numpy(dtype=float),
        target=parsed.values(usable, source),
        excluded={str(k): int(v) for k, v in excluded.items()},
    )
    return data, parsed


@dataclass
class FittedModel:
    """A fitted regressor with what it was fitted on: the folder `regmix fit` writes."""

    regressor: Regressor
    spec: dict[str, Any]
    train: pd.DataFrame
    """`run`, `weight.<domain>`..., `target` of the runs it was fitted on."""

    @property
    def domains(self) -> list[str]:
        return list(self.spec["domains"])

    @cached_property
    def train_weights(self) -> np.ndarray:
        return self.train[[WEIGHT + d for d in self.domains]].to_numpy(dtype=float)

    def predict(self, weights: np.ndarray, threads: int = 1) -> np.ndarray:
        return predict_weights(self.regressor, weights, threads)


def _versions() -> dict[str, str]:
    import lightgbm
    import scipy
    import sklearn

    return {
        "regmix": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
    }


def fit_model(
    runs_path: str | os.PathLike,
    target: str,
    model: str = DEFAULT_MODEL,
    out: str | os.PathLike = "results/regression",
    folds: int = 5,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """`regmix fit`: cross-validate, fit on all usable runs, write the model folder; returns
    the metrics. Everything is computed before anything is written."""
    import joblib

    threads = threads or available_threads()
    data, parsed = training_data(runs_path, target)
    regressor = make_model(model, seed)
    ids = fold_ids(len(data.runs), folds, seed)

    started = time.perf_counter()
    oof = cross_validate(regressor, data.weights, data.target, ids, threads)
    cv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    regressor.fit(data.weights, data.target)
    fit_seconds = time.perf_counter() - started

    metrics = {
        "model": model,
        "target": parsed.text,
        **cv_metrics(data.target, oof),
        "n_runs": len(data.runs),
        "n_excluded": sum(data.excluded.values()),
        "excluded": data.excluded,
        "folds": folds,
        "seed": seed,
        "target_weights": parsed.weights,
        "hyperparameters": regressor.hyperparameters(),
        "cv_seconds": round(cv_seconds, 3),
        "fit_seconds": round(fit_seconds, 3),
    }
    spec = {
        "model": model,
        "summary": regressor.summary,
        "target": parsed.text,
        "target_weights": parsed.weights,
        "domains": data.domains,
        "n_runs": len(data.runs),
        "seed": seed,
        "versions": _versions(),
    }
    train = mixture_table(data.runs, data.domains, data.weights)
    train["target"] = data.target
    cv = pd.DataFrame({"run": data.runs, "fold": ids, "actual": data.target, "prediction": oof})

    out = Path(out)
    with atomic_path(out / MODEL_FILE) as tmp:
        joblib.dump(regressor, tmp)
    write_table(train, out / TRAIN_FILE)
    write_table(cv, out / CV_FILE)
    write_json(spec, out / SPEC_FILE)
    write_json(metrics, out / METRICS_FILE)
    return metrics


def load_model(model_dir: str | os.PathLike) -> FittedModel:
    """Load a folder written by `fit_model`, failing in one line if it is not one."""
    import joblib

    model_dir = Path(model_dir)
    for name in (MODEL_FILE, SPEC_FILE, TRAIN_FILE):
        if not (model_dir / name).is_file():
            raise RegmixError(f"{model_dir}: not a fitted model folder (no {name}; run regmix fit)")
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    built_with = spec.get("versions", {})
    now = _versions()
    for package in ("scikit-learn", "lightgbm"):
        if built_with.get(package) not in (None, now[package]):
            print(
                f"regmix: warning: {model_dir} was fitted with {package} {built_with[package]}, "
                f"loading with {now[package]}",
                file=sys.stderr,
            )
    try:
        regressor = joblib.load(model_dir / MODEL_FILE)
    except Exception as exc:  # unpickling raises anything from EOFError to AttributeError
        reason = f"{exc.__class__.__name__}: {exc}"
        raise RegmixError(f"{model_dir / MODEL_FILE}: cannot load ({reason})") from exc
    train = read_table(model_dir / TRAIN_FILE)
    return FittedModel(regressor, spec, train)


# --- predicting for a mixture file ----------------------------------------------------------


def read_mixtures(path: str | os.PathLike) -> pd.DataFrame:
    """A mixture table (`run`, `weight.<domain>`; parquet or CSV, also a runs table) or a
    RegMix mixture CSV (`index`, `train_<domain>`), as a mixture table."""
    table = read_table(path)
    if weight_columns(table):
        if "run" not in table:
            raise RegmixError(f"{path}: missing column run")
        table = table.assign(run=table["run"].astype(str))
        check_weights(table, str(path))
        return table
    if REGMIX_INDEX in table and any(c.startswith(REGMIX_MIXTURE) for c in table.columns):
        return regmix_mixture_table(table, path)[0]
    raise RegmixError(
        f"{path}: expected a mixture table (run, {WEIGHT}<domain>...) or a RegMix mixture CSV "
        f"({REGMIX_INDEX}, {REGMIX_MIXTURE}<domain>...)"
    )


def domain_mismatch(have: list[str], expected: list[str]) -> str:
    """'missing a, b; extra c' for two domain lists, or '' when they hold the same domains."""
    missing = [d for d in expected if d not in have]
    extra = [d for d in have if d not in expected]
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (("missing", missing), ("extra", extra))
        if names
    ]
    return "; ".join(parts)


def aligned_weights(table: pd.DataFrame, domains: list[str], source: str) -> np.ndarray:
    """The table's weights in the model's domain order; the domain sets must be equal."""
    mismatch = domain_mismatch(mixture_domains(table), domains)
    if mismatch:
        raise RegmixError(f"{source}: domains differ from the model's ({mismatch})")
    return table[[WEIGHT + d for d in domains]].to_numpy(dtype=float)


def predict_mixtures(
    model_dir: str | os.PathLike,
    mixtures_path: str | os.PathLike,
    out: str | os.PathLike,
    threads: int | None = None,
) -> pd.DataFrame:
    """`regmix predict`: write `run, prediction` for every mixture in a file."""
    model = load_model(model_dir)
    table = read_mixtures(mixtures_path)
    weights = aligned_weights(table, model.domains, str(mixtures_path))
    predictions = model.predict(weights, threads or available_threads())
    result = pd.DataFrame({"run": table["run"], "prediction": predictions})
    write_table(result, out)
    return result
