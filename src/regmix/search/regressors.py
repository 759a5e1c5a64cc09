"""The regressors: models of a target loss as a function of mixture weights.

Every regressor takes raw mixture weights (rows summing to 1) and applies its own transform,
so callers never need to know which features a model uses. Hyper-parameters are chosen on
the runs a model is fitted on and nowhere else: ridge's alpha by an inner 5-fold CV, the
Gaussian process's kernel by its marginal likelihood.

Models (`MODELS`; `DEFAULT_MODEL` is `gp`, the most accurate on RegMix's 512 runs):
- `linear`: ridge on the weights, alpha from {1e-3 … 1e3} by 5-fold CV (the paper's).
- `lightgbm`: the paper's settings, 1000 trees at learning rate 1e-2, no early stopping.
- `mixlaw`: Ye et al.'s data-mixing law, loss = c + k·exp(Σ t_j w_j), by least squares.
- `gp`: a Gaussian process (ARD RBF + white noise) under a trend linear in its features,
  raised to bound every run from above; the features are log(w + 1e-3), log(w + 1e-2) or
  sqrt(w), whichever has the highest marginal likelihood; length scales started from the
  spread of each feature so the optimiser does not stall on small run counts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from regmix.errors import RegmixError
from regmix.parallel import KERNEL_BLOCK, parallel_map, quiet_convergence, squared_distances

PREDICT_BATCH = 16_384
"""Rows scored per call when prediction is spread over threads."""


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


GP_MEANS = ("envelope", "linear", "worst", "average")


def feature_transform(spec: str) -> Callable[[np.ndarray], np.ndarray]:
    """A GP feature transform by name: `log:<offset>` is log(w + offset) (the offset keeps an
    absent domain finite and sets how far apart trace weights lie), `sqrt` is √w (the
    Hellinger geometry: trace weights lie close to 0, far from large ones)."""
    name, _, value = spec.partition(":")
    if name == "sqrt" and not value:
        return np.sqrt
    if name == "log":
        try:
            offset = float(value)
        except ValueError:
            offset = -1.0
        if offset > 0:
            return lambda weights: np.log(weights + offset)
    raise RegmixError(f"gp.features: {spec!r} is not log:<offset > 0> or sqrt")


@dataclass
class _Posterior:
    """One fitted GP (one feature transform): what prediction needs, and its evidence."""

    transform: str
    trend: np.ndarray
    """The prior mean: intercept, then one coefficient per feature (zero for a constant)."""
    y_scale: float
    kernel: Any
    amplitude: float
    length_scale: np.ndarray
    noise: float
    z_train: np.ndarray
    dual: np.ndarray
    cholesky: np.ndarray
    log_likelihood: float
    """Log marginal likelihood of the modelled targets (log loss) themselves, so that
    transforms compare on the same data."""


@dataclass
class GaussianProcess(Regressor):
    """GP regression on transformed weights with an ARD RBF kernel and white noise, around a
    linear trend in the same features.

    Prediction does not go through scikit-learn: it needs only the length scales, the
    training points and the dual coefficients, and computing the kernel as one matmul per
    batch is several times faster than `GaussianProcessRegressor.predict` on 1M candidates.
    """

    name: ClassVar[str] = "gp"
    summary: ClassVar[str] = (
        "Gaussian process under a linear envelope, features chosen by marginal likelihood"
    )
    uncertainty: ClassVar[str] = "gaussian process posterior, seed noise included"
    features: tuple[str, ...] = ("log:0.001", "log:0.01", "sqrt")
    """Candidate feature transforms (`feature_transform`); the fit keeps the one with the
    highest marginal likelihood. None ranks best on every target: log(w + 1e-3) follows losses
    that hinge on trace weights (RegMix's mean over 13 domains), sqrt(w) smooth ones (Pile-CC)."""
    mean: str = "envelope"
    """The GP's prior mean, what it predicts far from every run. `envelope`: a trend linear in
    the features (ridge, alpha by leave-one-out) raised until no run lies above it, so that a
    mixture unlike the runs (a pure domain they never reached) is ranked by what each domain's
    weight did elsewhere, pessimistically; `linear`: the bare trend (optimistic far away, it
    ranked the best mixtures worse: README); `worst`: the largest (log) loss of the runs;
    `average`. A constant mean is what a GP reverts to a few length scales from the runs: on
    the demo it predicted a pure domain 8.1 (the worst run) where a proxy measured 4.8."""
    restarts: int = 0
    """Extra optimiser starts from random kernel parameters (the data-based start suffices)."""
    initial_kernel: Any = field(default=None, repr=False)
    """Kernel to start the marginal-likelihood search from; None starts from the data."""
    log_target: bool = True
    """Model log(loss). Losses span a wide range (the demo's runs: 1.7 to 9), and on the raw
    scale the poor mixtures set the kernel's amplitude: the fit then dips far below every run
    near the optimum (predicting 1.27 where 178 runs measured no better than 1.62). On the log
    scale the predicted optimum stays near what was measured and its interval is honest."""
    interval_scale: float = 1.0
    """Factor on the standard deviation of a new run's measurement (`predict_interval`):
    `regmix fit` sets it from how often earlier rounds' runs fell inside the intervals given
    for them (`regmix.search.calibration`); 1 is the posterior as fitted."""

    def __post_init__(self) -> None:
        if not self.features:
            raise RegmixError("gp.features: need at least one transform")
        for spec in self.features:
            feature_transform(spec)
        if self.mean not in GP_MEANS:
            raise RegmixError(f"gp.mean: {self.mean!r} is not one of {', '.join(GP_MEANS)}")

    def features_of(self, weights: np.ndarray) -> np.ndarray:
        """The chosen transform of the weights (the GP's inputs)."""
        return feature_transform(self.transform_)(weights)

    def prior_mean(self, weights: np.ndarray) -> np.ndarray:
        """The GP's prior mean of the modelled quantity (log loss with `log_target`)."""
        return self.trend_[0] + self.features_of(weights) @ self.trend_[1:]

    def _data_kernel(self, x: np.ndarray):
        from sklearn.gaussian_process.kernels import RBF, WhiteKernel
        from sklearn.gaussian_process.kernels import ConstantKernel as Constant

        spread = x.std(axis=0)
        length = np.where(spread > 0, spread, 1.0) * np.sqrt(x.shape[1])
        return Constant(1.0, (1e-2, 1e2)) * RBF(length, (1e-2, 1e5)) + WhiteKernel(0.1, (1e-6, 1.0))

    def _trend(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import RidgeCV

        if self.mean in ("linear", "envelope"):
            ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x, y)
            lift = (y - ridge.predict(x)).max() if self.mean == "envelope" else 0.0
            return np.r_[ridge.intercept_ + lift, ridge.coef_]
        level = y.max() if self.mean == "worst" else y.mean()
        return np.r_[level, np.zeros(x.shape[1])]

    def _posterior(self, transform: str, weights: np.ndarray, y: np.ndarray) -> _Posterior:
        from sklearn.gaussian_process import GaussianProcessRegressor

        x = feature_transform(transform)(weights)
        trend = self._trend(x, y)
        residual = y - trend[0] - x @ trend[1:]
        y_scale = float(residual.std()) or 1.0
        kernel = self.initial_kernel if self.initial_kernel is not None else self._data_kernel(x)
        gp = GaussianProcessRegressor(
            kernel, n_restarts_optimizer=self.restarts, random_state=self.seed
        )
        with quiet_convergence():
            gp.fit(x, residual / y_scale)
        amplitude = float(gp.kernel_.k1.k1.constant_value)
        length_scale = np.broadcast_to(gp.kernel_.k1.k2.length_scale, x.shape[1]).copy()
        return _Posterior(
            transform=transform,
            trend=trend,
            y_scale=y_scale,
            kernel=gp.kernel_,
            amplitude=amplitude,
            length_scale=length_scale,
            noise=float(gp.kernel_.k2.noise_level),
            z_train=x / length_scale,
            dual=np.asarray(gp.alpha_, dtype=float).ravel() * amplitude,
            cholesky=np.asarray(gp.L_, dtype=float),  # of amplitude·RBF + noise·I
            # the residuals were divided by y_scale: its Jacobian puts every transform's
            # evidence on the scale of y itself
            log_likelihood=float(gp.log_marginal_likelihood_value_) - len(y) * np.log(y_scale),
        )

    def fit(self, weights: np.ndarray, target: np.ndarray) -> GaussianProcess:
        if self.log_target:
            if (target <= 0).any():
                raise RegmixError("gp: log_target needs positive losses")
            target = np.log(target)
        fits = [self._posterior(t, weights, target) for t in self.features]
        best = max(fits, key=lambda f: f.log_likelihood)
        for name, value in vars(best).items():
            setattr(self, name + "_", value)
        self.evidence_ = {f.transform: f.log_likelihood for f in fits}
        return self

    def scaled(self, weights: np.ndarray) -> np.ndarray:
        """Features divided by the length scales: the RBF is exp(-|a - b|² / 2) in them."""
        return self.features_of(weights) / self.length_scale_

    def covariance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Prior covariance of the latent loss between scaled feature rows (standardised units)."""
        k = squared_distances(a, b)
        k *= -0.5
        np.exp(k, out=k)
        k *= self.amplitude_
        return k

    def latent_mean(self, weights: np.ndarray) -> np.ndarray:
        """Posterior mean of the modelled quantity (log loss with `log_target`)."""
        z = self.scaled(weights)
        rows = max(256, KERNEL_BLOCK // len(self.z_train_))
        out = np.empty(len(z))
        for start in range(0, len(z), rows):
            k = squared_distances(z[start : start + rows], self.z_train_)
            k *= -0.5
            np.exp(k, out=k)
            out[start : start + rows] = k @ self.dual_
        return out * self.y_scale_ + self.prior_mean(weights)

    def predict(self, weights: np.ndarray) -> np.ndarray:
        mean = self.latent_mean(weights)
        return np.exp(mean) if self.log_target else mean

    def explained(self, z: np.ndarray) -> np.ndarray:
        """L⁻¹ k(train, z): what the training runs explain of each row's covariance
        (runs × rows); the posterior covariance of rows a and b is k(a, b) - vₐᵀ v_b."""
        from scipy.linalg import solve_triangular

        return solve_triangular(self.cholesky_, self.covariance(self.z_train_, z), lower=True)

    def latent_std(
        self, weights: np.ndarray, observation: bool = True, calibrated: bool = True
    ) -> np.ndarray:
        """Posterior standard deviation of the modelled quantity (log loss with `log_target`);
        with `observation`, of a new run's measurement (the white noise, e.g. seed noise,
        included, and with `calibrated` times `interval_scale`), else of the underlying
        mean."""
        z = self.scaled(weights)
        rows = max(256, KERNEL_BLOCK // len(self.z_train_))
        variance = np.empty(len(z))
        for start in range(0, len(z), rows):
            v = self.explained(z[start : start + rows])
            variance[start : start + rows] = self.amplitude_ - (v * v).sum(axis=0)
        variance = np.maximum(variance, 0.0) + (self.noise_ if observation else 0.0)
        scale = self.interval_scale if observation and calibrated else 1.0
        return np.sqrt(variance) * self.y_scale_ * scale

    def predict_std(self, weights: np.ndarray, observation: bool = True) -> np.ndarray:
        """Posterior standard deviation in loss units (to first order on the log scale)."""
        std = self.latent_std(weights, observation)
        return self.predict(weights) * std if self.log_target else std

    def predict_interval(
        self, weights: np.ndarray, z: float, observation: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Central interval of ± z posterior standard deviations, in loss units (skewed
        upwards with `log_target`: a loss can be far worse than predicted, not far better)."""
        mean, std = self.latent_mean(weights), self.latent_std(weights, observation)
        lower, upper = mean - z * std, mean + z * std
        return (np.exp(lower), np.exp(upper)) if self.log_target else (lower, upper)

    def warm_unfitted(self) -> GaussianProcess:
        """Keeps the chosen transform as well as starting from the fitted kernel."""
        fresh = self.unfitted()
        fresh.features = (self.transform_,)
        fresh.initial_kernel = self.kernel_
        return fresh

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "features": self.transform_,
            "log_likelihood": {t: round(v, 3) for t, v in self.evidence_.items()},
            "mean": self.mean,
            "trend": [float(c) for c in self.trend_],
            "interval_scale": self.interval_scale,
            "amplitude": self.amplitude_,
            "noise": self.noise_,
            "length_scale": [float(s) for s in self.length_scale_],
            "kernel": str(self.kernel_),
        }


@dataclass
class StackedEnsemble(Regressor):
    """A weighted mean of member regressors, the weights chosen by cross-validation on the
    runs the ensemble is fitted on (and nowhere else).

    Each member is cross-validated on the training runs; non-negative least squares on the
    members' out-of-fold predictions gives their weights (normalised to sum to 1); then every
    member is refitted on all runs. A flexible member (the GP) ranks mixtures near the runs
    best, a piecewise one (LightGBM) keeps the ranking of far-apart mixtures steadier, and the
    CV decides how much of each the data supports. Its uncertainty: `uncertainty` below.
    """

    name: ClassVar[str] = "ensemble"
    summary: ClassVar[str] = "gp + lightgbm, weighted by non-negative least squares on their CV"
    uncertainty: ClassVar[str] = "the ensemble's CV error plus its GP member's posterior variance"
    members: tuple[str, ...] = ("gp", "lightgbm")
    """Names of the member models."""
    inner_folds: int = 5
    """Folds of the CV that weighs the members (on the training runs only)."""
    interval_scale: float = 1.0
    """Factor on the standard deviation of a new run's measurement, as for `gp`."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.members if m not in MODELS or m == self.name]
        if unknown or not self.members:
            raise RegmixError(f"ensemble.members: unknown or empty ({', '.join(unknown)})")

    def fit(self, weights: np.ndarray, target: np.ndarray) -> StackedEnsemble:
        from scipy.optimize import nnls
        from sklearn.model_selection import KFold

        folds = KFold(min(self.inner_folds, len(target)), shuffle=True, random_state=self.seed)
        oof = np.empty((len(target), len(self.members)))
        for train, test in folds.split(weights):
            for j, member in enumerate(self.members):
                fitted = make_model(member, self.seed).fit(weights[train], target[train])
                oof[test, j] = fitted.predict(weights[test])
        coef, _ = nnls(oof, target)
        if coef.sum() <= 0:  # every member useless on its own: fall back on an equal mix
            coef = np.ones(len(self.members))
        self.weights_ = coef / coef.sum()
        self.residual_var_ = float(np.mean((oof @ self.weights_ - target) ** 2))
        self.models_ = [make_model(m, self.seed).fit(weights, target) for m in self.members]
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        return sum(w * m.predict(weights) for w, m in zip(self.weights_, self.models_, strict=True))

    def predict_interval(
        self, weights: np.ndarray, z: float, observation: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The prediction ± z of `predict_std`."""
        mean, std = self.predict(weights), self.predict_std(weights, observation)
        return mean - z * std, mean + z * std

    def predict_std(
        self, weights: np.ndarray, observation: bool = True, calibrated: bool = True
    ) -> np.ndarray:
        """Out-of-fold error of the ensemble plus the GP member's posterior variance (with
        `observation` and `calibrated`, times `interval_scale`)."""
        variance = np.full(len(weights), self.residual_var_ if observation else 0.0)
        for model in self.models_:
            if isinstance(model, GaussianProcess):
                variance = variance + model.predict_std(weights, observation=False) ** 2
        scale = self.interval_scale if observation and calibrated else 1.0
        return np.sqrt(variance) * scale

    def hyperparameters(self) -> dict[str, Any]:
        fitted = dict(zip(self.members, self.models_, strict=True))
        return {
            "members": list(self.members),
            "member_weights": dict(zip(self.members, map(float, self.weights_), strict=True)),
            "cv_rmse": float(np.sqrt(self.residual_var_)),
            **{name: model.hyperparameters() for name, model in fitted.items()},
        }


MODELS: dict[str, type[Regressor]] = {
    cls.name: cls
    for cls in (RidgeRegression, LightGBMRegression, MixingLaw, GaussianProcess, StackedEnsemble)
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
