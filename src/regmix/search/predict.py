"""`regmix predict`: a fitted regressor's prediction for every mixture of a file, with how sure
it is (a 95% interval) and whether the mixture lies inside what the fitted runs cover.

It joins the fitted model (`regression`) with the support guard the simulation uses
(`simulate`), so it sits above both.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd

from regmix.files import write_table
from regmix.parallel import available_threads
from regmix.search.mixtures import WEIGHT, weight_columns
from regmix.search.regression import FittedModel, load_model
from regmix.search.runs import aligned_weights, read_mixtures
from regmix.search.simulate import Z_95, SimulationConfig
from regmix.search.support import Support


def predict_mixtures(
    model_dir: str | os.PathLike,
    mixtures_path: str | os.PathLike,
    out: str | os.PathLike,
    threads: int | None = None,
) -> pd.DataFrame:
    """`regmix predict`: write `run, prediction, lower, upper, inside_support` for every
    mixture in a file (see `prediction_bounds`)."""
    model = load_model(model_dir)
    table = read_mixtures(mixtures_path)
    warn_if_domains_differ(table, model.domains, mixtures_path)
    table, unseen = model_domains_only(table, model.domains)
    weights = aligned_weights(table, model.domains, str(mixtures_path))
    predictions = model.predict(weights, threads or available_threads())
    bounds = prediction_bounds(model, weights)
    result = pd.DataFrame({"run": table["run"], "prediction": predictions, **bounds})
    # A mixture that weights a domain no run was trained on is beyond what the model knows.
    result.loc[unseen, ["prediction", "lower", "upper"]] = np.nan
    result.loc[unseen, "inside_support"] = False
    write_table(result, out)
    return result


def warn_if_domains_differ(
    table: pd.DataFrame, domains: list[str], path: str | os.PathLike
) -> None:
    """Name the domains a mixture file and the model do not share: after a corpus change that is
    expected, but in a user's own file it is most often a misspelt column."""
    present = [c[len(WEIGHT) :] for c in weight_columns(table)]
    missing = [d for d in domains if d not in present]
    extra = [d for d in present if d not in domains]
    if missing or extra:
        print(
            f"regmix predict: warning: {path}: domains differ from the model's (missing "
            f"{', '.join(missing) or 'none'}; extra {', '.join(extra) or 'none'}): a missing "
            "domain counts at weight 0, a mixture that weights an extra one gets no prediction",
            file=sys.stderr,
        )


def model_domains_only(table: pd.DataFrame, domains: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The mixtures over the model's domains: a domain the corpus no longer has is at weight 0,
    and a domain the model never saw is dropped; returns the rows that weighted one."""
    extra = [c for c in weight_columns(table) if c[len(WEIGHT) :] not in domains]
    unseen = (
        (table[extra].to_numpy(dtype=float) > 0).any(axis=1)
        if extra
        else np.zeros(len(table), bool)
    )
    table = table.drop(columns=extra)
    for domain in domains:
        if WEIGHT + domain not in table:
            table[WEIGHT + domain] = 0.0
    return table, unseen


def prediction_bounds(model: FittedModel, weights: np.ndarray) -> dict[str, np.ndarray]:
    """How sure each prediction is: the 95% interval of what a proxy trained on the mixture
    would measure (`lower`, `upper`; NaN for a regressor without a posterior), and whether
    the mixture lies inside what the fitted runs cover (`inside_support`, the region that
    `simulate` guards its optimum with); outside it the prediction is an extrapolation."""
    if hasattr(model.regressor, "predict_interval"):
        lower, upper = model.regressor.predict_interval(weights, Z_95)
    else:
        lower = upper = np.full(len(weights), np.nan)
    support = Support.of_runs(model.train_weights, SimulationConfig.support_quantile)
    return {"lower": lower, "upper": upper, "inside_support": support.contains(weights)}
