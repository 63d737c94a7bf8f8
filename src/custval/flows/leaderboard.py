"""Which CLV predicts a company's customers best: the probabilistic model, machine learning on
all features, or the hybrid of both, judged side by side on a time-based holdout.

The orchestration of :mod:`custval.models.clv_ml` (what learns) on a prepared project (where the
data comes from), in four steps:

1. **Windows.** The training rows are the customers at a cutoff: their features computed from
   the data before it, and their net spend in the window after it (at least 0). Several
   cutoffs are stacked (rolling origin), a quarter of a window apart, all windows ending by the
   evaluation date. A window is the horizon when the history allows it, that is when the
   latest cutoff leaves at least a quarter of the horizon of history before it (earlier
   cutoffs that would not are dropped); with a shorter history it is half of what there is,
   and the model's spend over the window is carried on to the horizon along each customer's
   curve of expected purchases by the BG/NBD model fitted at the date (``x E[X(horizon)] /
   E[X(window)]``: a customer likely to have gone counts on fewer purchases later, where
   ``x horizon / window`` would carry the window's rate on unchanged; that is the fallback for a
   customer without a purchase or when the BG/NBD model cannot be fitted). The note in the
   result says by how much; at most 4x the window, else only the BTYD model runs. Intervals
   are then calibrated on the window, not the horizon. Features
   computed from dated data (transactions, sessions, usage, interactions) see only what came
   before each cutoff; the CRM profile (plan, region, services) is as the source holds it
   now, as in the value model, so a profile that changes over time lends the
   machine-learned models some hindsight. Spend is net of refunds and at least 0.
2. **Candidates.** ``btyd`` (BG/NBD and Gamma-Gamma fitted on all history at the evaluation
   date; customers without a purchase get 0), ``lightgbm`` (Tweedie), ``random_forest``,
   ``mlp`` and ``hybrid`` (``lightgbm`` on the features plus the BTYD model's P(alive),
   expected purchases and expected spend over the window, fitted at each cutoff on the data
   before it).
3. **Holdout.** Every candidate predicts each customer's spend over the horizon from the
   evaluation date; the leaderboard sets them against the actual spend
   (:func:`custval.models.clv_ml.clv_metrics`, a decile table each) and
   :func:`custval.models.clv_ml.choose` picks one. The machine-learned candidates' intervals are
   conformal, learnt on a fifth of the customers held out of their training (their rows at the
   latest cutoff), and their coverage of the holdout is reported; the BTYD intervals come from
   its parameters' uncertainty only, and their coverage is reported too.
4. **Today.** Without a given holdout, the evaluation date is the as-of date less the horizon;
   the chosen candidate is then refitted with the windows that end by the as-of date and
   predicts the horizon after it, with intervals and, for a machine-learned model, the reasons.

Money is in the data's currency and undiscounted over the horizon, except in
:attr:`ClvBoard.predictions`, where a discount rate (per time unit) is applied: to the BTYD CLV
by its own formula, to a machine-learned one as to spend spread evenly over the horizon.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from custval.columns import (
    HYBRID_COLUMNS,
    HYBRID_DESCRIPTIONS,
    HYBRID_SOURCES,
    SCORED_CLV,
    SUMMARY_COLUMNS,
)
from custval.config import Project
from custval.errors import CustvalError, FitError
from custval.features.transactions import UNIT_DAYS
from custval.flows.customer_base import ONE_YEAR, btyd_columns
from custval.flows.preparation import Prepared, features, first_purchase, future_spend
from custval.models.btyd import BetaGeo
from custval.models.clv_ml import SpendRegressor, choose, clv_metrics, decile_table
from custval.models.clv_serving import carry_factor, serving_spec
from custval.models.explain import reason_columns

__all__ = ["CLV_METHODS", "ClvBoard", "clv_leaderboard"]

#: every candidate, in the leaderboard's order
CLV_METHODS = ("btyd", "lightgbm", "random_forest", "mlp", "hybrid")
#: the machine-learned candidates on features alone (``--method ml`` picks among them)
ML_METHODS = ("lightgbm", "random_forest", "mlp")
#: what each ``method`` (of ``custval clv`` and ``[clv]``) runs: its candidates
METHOD_CANDIDATES = {
    "ml": ("btyd", "lightgbm", "random_forest", "mlp"),
    "hybrid": ("btyd", "hybrid"),
    "auto": CLV_METHODS,
}
#: the longest horizon, in training windows, that the machine-learned spend is scaled to
MAX_SCALE = 4.0
#: at most this many training rows (all cutoffs together); more are sampled, customers whole
MAX_TRAINING_ROWS = 400_000


@dataclass
class Windows:
    """Where the training rows come from: cutoffs, each with a window of ``days``."""

    cutoffs: list[date]
    days: int
    horizon_days: int

    @property
    def scale(self) -> float:
        return self.horizon_days / self.days


@dataclass
class ClvBoard:
    """The leaderboard of CLV methods on a time-based holdout, and what the chosen one says."""

    #: model, mae, rmse, total_error, spearman, top20_capture, top20_best, coverage, seconds
    leaderboard: pd.DataFrame
    chosen: str
    #: each method's predicted against actual spend by decile of its prediction
    deciles: dict[str, pd.DataFrame]
    #: the holdout: from, to, customers, actual_total; the training windows
    evaluation: dict[str, Any]
    #: per customer at the prediction date: customer_id, clv, clv_lower, clv_upper and each
    #: method's clv_<method> (holdout mode: the holdout's actual spend as ``actual``)
    predictions: pd.DataFrame
    #: the chosen machine-learned model's top reasons per customer (None for btyd)
    reasons: pd.DataFrame | None = None
    #: the fitted chosen model (a SpendRegressor, or None for btyd)
    model: Any = None
    level: float = 0.9
    notes: list[str] = field(default_factory=list)
    #: how the chosen machine-learned model's spend becomes the CLV (for the store and the
    #: service, :mod:`custval.models.clv_serving`); None for btyd
    serving: dict[str, Any] | None = None


def clv_leaderboard(
    project: Project,
    prepared: Prepared,
    *,
    horizon: float | None = None,
    holdout_end: date | None = None,
    methods: tuple[str, ...] = CLV_METHODS,
    choose_method: str = "auto",
    cutoffs: int = 4,
    level: float = 0.9,
    discount: float = 0.0,
    top_k: int = 3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    today: pd.DataFrame | None = None,
) -> ClvBoard:
    """Compare CLV methods on a time-based holdout and predict with the best (module docstring).

    ``horizon`` is in the project's time unit (default: a year). With ``holdout_end`` the
    holdout runs from the project's as-of date to it (its length is the horizon) and the
    predictions are those of the holdout; without, it is the horizon before the as-of date and
    the predictions are for the horizon after it (``today``: the feature table at the as-of
    date, when the caller has it). ``choose_method`` is ``auto`` (the
    leaderboard's pick), ``ml`` (the best of the machine-learned models on features alone) or
    one of ``methods``.
    """
    _check_methods(methods, choose_method)
    if "transactions" not in prepared.tables:
        raise CustvalError("CLV needs a source of kind 'transactions'")
    evaluated, horizon_days = _evaluation_span(project, horizon, holdout_end)
    job = _Job(project, prepared, horizon_days, level, seed, progress or _quiet)
    first = _first_purchase(prepared)
    windows = _windows(first, evaluated, horizon_days, cutoffs)
    methods, notes = _methods_for(methods, windows, choose_method, first, evaluated)
    job.say(f"evaluating at {evaluated}: windows of {windows.days} days from {windows.cutoffs}")
    at_eval = _customers(project, prepared, evaluated)
    actual = _actual_spend(prepared, at_eval, evaluated, horizon_days)
    rows = _training_rows(project, prepared, windows, "hybrid" in methods, seed)
    job.say(f"{len(rows.X):,} training rows")
    judged = _run_methods(job, methods, rows, at_eval, evaluated, windows, actual=actual)
    board = pd.DataFrame(judged.metrics).sort_values(["mae", "model"]).reset_index(drop=True)
    notes += judged.notes
    notes += [f"{m} could not be fitted: {why}" for m, why in judged.failed.items()]
    chosen = _chosen(board, choose_method, judged.failed)
    evaluation = {
        "from": evaluated.isoformat(),
        "to": (evaluated + timedelta(days=horizon_days)).isoformat(),
        "customers": len(at_eval),
        "actual_total": float(actual.sum()),
        "window_days": windows.days,
        "cutoffs": [c.isoformat() for c in windows.cutoffs],
        "training_rows": len(rows.X),
    }
    if holdout_end is not None:
        predictions = _holdout_predictions(at_eval, judged, chosen, actual)
        fitted, at = judged, at_eval
    else:
        # today: refit the chosen method with the windows that end by the as-of date
        job.say(f"refitting {chosen} for {project.as_of}")
        windows_today = _windows(first, project.as_of, horizon_days, cutoffs)
        if chosen != "btyd":
            rows = _training_rows(project, prepared, windows_today, chosen == "hybrid", seed)
        at = _customers(project, prepared, project.as_of) if today is None else today
        fitted = _run_methods(
            job, (chosen,), rows, at, project.as_of, windows_today, actual=None, discount=discount
        )
        # what the kept model's refit says (its windows may differ from the evaluation's)
        notes += [f"refitted for {project.as_of}: {n}" for n in fitted.notes]
        lower, upper = fitted.intervals[chosen]
        predictions = pd.DataFrame({"customer_id": at["customer_id"].astype(str)})
        predictions["clv"] = fitted.predicted[chosen]
        predictions["clv_lower"] = lower
        predictions["clv_upper"] = upper
    model = fitted.models.get(chosen)
    why = _reasons(model, fitted.frames.get(chosen), top_k, at.attrs.get("catalogue"))
    serving = fitted.serving.get(chosen)
    return ClvBoard(
        board, chosen, judged.deciles, evaluation, predictions, why, model, level, notes, serving
    )


def _quiet(_message: str) -> None:
    return None


@dataclass(frozen=True)
class _Job:
    """What every fit of one leaderboard shares."""

    project: Project
    prepared: Prepared
    horizon_days: int
    level: float
    seed: int
    say: Callable[[str], None]

    @property
    def unit(self) -> float:
        """Days in the project's time unit."""
        return UNIT_DAYS[self.project.time_unit]


def _check_methods(methods: tuple[str, ...], choose_method: str) -> None:
    unknown = [m for m in methods if m not in CLV_METHODS]
    if unknown or not methods:
        raise CustvalError(
            f"unknown CLV method '{(unknown or [''])[0]}'",
            hint="Use some of " + ", ".join(CLV_METHODS),
        )
    if choose_method not in ("auto", "ml") and choose_method not in methods:
        raise CustvalError(
            f"unknown CLV method '{choose_method}'",
            hint="Use auto, ml or one of " + ", ".join(methods),
        )


def _evaluation_span(
    project: Project, horizon: float | None, holdout_end: date | None
) -> tuple[date, int]:
    """The date the candidates are judged from and the horizon in days: the given holdout
    after the as-of date, else the horizon before it."""
    if holdout_end is not None:
        if holdout_end <= project.as_of:
            raise CustvalError(
                f"the holdout end {holdout_end} must come after the as-of date {project.as_of}"
            )
        evaluated, horizon_days = project.as_of, (holdout_end - project.as_of).days
    else:
        unit = UNIT_DAYS[project.time_unit]
        horizon_days = round((horizon or ONE_YEAR[project.time_unit]) * unit)
        evaluated = project.as_of - timedelta(days=horizon_days)
    if horizon_days < 7:
        raise CustvalError(f"the horizon must be at least a week, not {horizon_days} days")
    return evaluated, horizon_days


def _methods_for(
    methods: tuple[str, ...], windows: Windows, choose_method: str, first: date, evaluated: date
) -> tuple[tuple[str, ...], list[str]]:
    """The candidates the training windows allow, with a note on those left out: the
    machine-learned ones need a window at most MAX_SCALE times shorter than the horizon. A
    method asked for by name (ml, hybrid...) that the history cannot train is refused, saying
    how much history it needs and how much there is."""
    if windows.scale <= MAX_SCALE:
        return methods, []
    if choose_method not in ("auto", "btyd"):
        least = max(7, windows.horizon_days // 4)
        needed = 2 * int(np.ceil(windows.horizon_days / MAX_SCALE)) + least
        raise CustvalError(
            f"--method {choose_method} needs at least {needed} days of history before "
            f"{evaluated} to learn spend over a horizon of {windows.horizon_days} days "
            f"(training windows of at least {windows.horizon_days / MAX_SCALE:.0f} days); "
            f"the history from the first purchase ({first}) has {(evaluated - first).days} days",
            hint="Use a shorter horizon (--horizon or --holdout-end), a later date or "
            "--method btyd",
        )
    if "btyd" not in methods:
        raise CustvalError(
            f"the history allows training windows of {windows.days} days, too short to "
            f"learn spend over a horizon of {windows.horizon_days} days (more than "
            f"{MAX_SCALE:g}x the window)",
            hint="Use a shorter horizon, a later date or --method btyd",
        )
    dropped = [m for m in methods if m != "btyd"]
    note = (
        f"{', '.join(dropped)} left out: the history allows training windows of "
        f"{windows.days} days, more than {MAX_SCALE:g}x shorter than the horizon"
    )
    return ("btyd",), [note]


def _actual_spend(
    prepared: Prepared, at: pd.DataFrame, evaluated: date, horizon_days: int
) -> np.ndarray:
    """Each customer's net spend over the holdout, at least 0: a customer whose refunds of
    earlier orders outweigh their new purchases spent nothing, in training, intervals and
    judging alike."""
    end = evaluated + timedelta(days=horizon_days)
    actual = np.maximum(future_spend(prepared, at["customer_id"], evaluated, end), 0.0)
    if not (actual > 0).any():
        raise CustvalError(
            f"no customer spent anything between {evaluated} and {end}: there is nothing to "
            "judge the models on"
        )
    return actual


def _chosen(board: pd.DataFrame, choose_method: str, failed: dict[str, str]) -> str:
    if choose_method not in ("auto", "ml") and choose_method in failed:
        raise CustvalError(f"{choose_method} could not be fitted: {failed[choose_method]}")
    if choose_method == "auto":
        return choose(board)
    if choose_method == "ml":
        return choose(board[board["model"].isin(ML_METHODS)])
    return choose_method


def _holdout_predictions(
    at: pd.DataFrame, judged: _Outcome, chosen: str, actual: np.ndarray
) -> pd.DataFrame:
    """Per customer: the chosen CLV with its interval, every candidate's, and the actual."""
    predictions = pd.DataFrame({"customer_id": at["customer_id"].astype(str)})
    for m, p in judged.predicted.items():
        predictions[f"clv_{m}"] = p
    predictions["actual"] = actual
    lower, upper = judged.intervals[chosen]
    predictions.insert(1, "clv", judged.predicted[chosen])
    predictions.insert(2, "clv_lower", lower)
    predictions.insert(3, "clv_upper", upper)
    return predictions


# ---- windows and rows ------------------------------------------------------------------------


def _first_purchase(prepared: Prepared) -> date:
    first = first_purchase(prepared)
    if first is None:
        raise CustvalError("the transactions have no purchase dates")
    return first


def _windows(first: date, end: date, horizon_days: int, cutoffs: int) -> Windows:
    """Cutoffs and window length for training rows whose windows end by ``end``."""
    history = (end - first).days
    least = max(7, horizon_days // 4)  # history before the earliest cutoff
    days = horizon_days if history - horizon_days >= least else (history - least) // 2
    if days < 7:
        raise CustvalError(
            f"the history from the first purchase ({first}) to {end} is {history} days: too "
            f"short to learn spend over a window (a horizon of {horizon_days} days needs at "
            f"least {2 * 7 + least} days of history before {end})",
            hint="Use a later date, a shorter horizon or --method btyd",
        )
    step = max(1, days // 4)
    found = [end - timedelta(days=days + j * step) for j in range(max(1, cutoffs))]
    return Windows([c for c in found if (c - first).days >= least] or found[:1], days, horizon_days)


def _customers(project: Project, prepared: Prepared, at: date) -> pd.DataFrame:
    """The customers known at ``at`` and their features (no label or key column but the id)."""
    found = features(project, prepared, as_of=at)
    table = found.to_pyarrow().to_pandas()
    if table.empty:
        raise CustvalError(f"there are no customers at {at}")
    # a CRM label (segment_label, say) is an answer, not a feature: as in the value model
    others = [
        f.name
        for f in found.catalogue
        if f.role != "feature" and f.name != "customer_id" and f.name in table.columns
    ]
    table = table.drop(columns=others)
    table.attrs["catalogue"] = {f.name: f.description for f in found.catalogue}
    return table


@dataclass
class _Rows:
    X: pd.DataFrame  # features (with the hybrid's columns when asked), customer_id
    y: np.ndarray  # spend in the window
    latest: np.ndarray  # True for rows of the latest cutoff
    calibration: np.ndarray  # True for the customers held out for the intervals


def _training_rows(
    project: Project, prepared: Prepared, windows: Windows, hybrid: bool, seed: int
) -> _Rows:
    frames, spends, latest = [], [], []
    for j, cut in enumerate(windows.cutoffs):  # a loop over the few cutoffs
        table = _customers(project, prepared, cut)
        spend = np.maximum(
            future_spend(prepared, table["customer_id"], cut, cut + timedelta(days=windows.days)),
            0.0,
        )
        if hybrid:
            _add_btyd(project, prepared, table, cut, windows.days)
        frames.append(table)
        spends.append(spend)
        latest.append(np.full(len(table), j == 0))
    table = pd.concat(_aligned(frames), ignore_index=True)
    y = np.concatenate(spends)
    newest = np.concatenate(latest)
    ids = table["customer_id"].astype(str).to_numpy()
    # a fifth of the customers (all their rows) is held out for the intervals; by a hash of
    # the id, so that a customer is in or out at every cutoff
    bucket = pd.util.hash_array(ids.astype(object), categorize=False) % 5
    held = bucket == (seed % 5)
    if len(table) > MAX_TRAINING_ROWS:
        keep_share = MAX_TRAINING_ROWS / len(table)
        keep = (pd.util.hash_array(ids.astype(object), hash_key="custvalsample012") % 10_000) < (
            keep_share * 10_000
        )
        table, y = table[keep].reset_index(drop=True), y[keep]
        newest, held = newest[keep], held[keep]
    return _Rows(table, y, newest, held)


def _aligned(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The frames with the union of their columns. A numeric column a frame lacks -- the spend
    share of a product category nobody had bought yet at an early cutoff, say -- is 0 there,
    as it is for a customer who never bought that category; not a missing value."""
    union: dict[str, Any] = {}
    for f in frames:  # a loop over the few cutoffs
        for c in f.columns:
            union.setdefault(c, f[c].dtype)
    out = []
    for f in frames:
        lacking = [c for c in union if c not in f.columns]
        if lacking:
            fill = {c: (0.0 if pd.api.types.is_numeric_dtype(union[c]) else None) for c in lacking}
            f = f.assign(**fill)
        out.append(f)
    return out


def _add_btyd(
    project: Project, prepared: Prepared, table: pd.DataFrame, at: date, days: int
) -> dict[str, Any] | None:
    """The hybrid's columns: the BTYD model fitted at ``at`` on the history before it;
    returns that model (JSON, None when it could not be fitted)."""
    models = None
    try:
        # an early cutoff's fit can sit at extreme parameters, where some customers' terms
        # overflow: those customers get missing values below, not a warning
        with np.errstate(all="ignore"):
            cols, models = btyd_columns(
                project,
                prepared,
                table,
                horizon=days / UNIT_DAYS[project.time_unit],
                level=None,
                as_of=at,
            )
        cols = {k: np.where(np.isfinite(v), v, np.nan) for k, v in cols.items()}
    except FitError:
        # too few customers yet at an early cutoff to determine the model: the trees learn
        # those rows without its outputs (missing values), from the features alone
        cols = dict.fromkeys(HYBRID_SOURCES.values(), np.nan)
    for column, source in HYBRID_SOURCES.items():
        table[column] = cols[source]
    return models


# ---- fitting and judging ---------------------------------------------------------------------


@dataclass
class _Outcome:
    predicted: dict[str, np.ndarray] = field(default_factory=dict)
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    deciles: dict[str, pd.DataFrame] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: the candidates that could not be fitted, and why
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: how each machine-learned candidate's spend becomes its CLV (clv_serving.serving_spec)
    serving: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Scene:
    """The customers one run of the candidates predicts for, at ``when``, and what their
    predictions share."""

    at: pd.DataFrame  # their features, with the training rows' columns
    when: date
    windows: Windows
    discount: float
    #: spread evenly over the horizon, spend is worth this share of itself today
    discount_share: float
    #: the hybrid's frame (``at`` with the BTYD columns) and its BTYD models (JSON)
    hybrid_frame: pd.DataFrame | None = None
    hybrid_btyd: dict[str, Any] | None = None
    #: window to horizon, per customer, and its BG/NBD model; computed when first needed
    carry: np.ndarray | None = None
    carry_model: dict[str, Any] | None = None


def _run_methods(
    job: _Job,
    methods: tuple[str, ...],
    rows: _Rows,
    at: pd.DataFrame,
    when: date,
    windows: Windows,
    *,
    actual: np.ndarray | None,
    discount: float = 0.0,
) -> _Outcome:
    """Fit every candidate in ``methods`` and predict each customer of ``at`` over the horizon
    from ``when``; judged against ``actual`` when it is given. A candidate that cannot be
    fitted is noted, and the others go on."""
    out = _Outcome()
    horizon = job.horizon_days / job.unit
    share = (
        1.0
        if discount == 0
        else float(((1 + discount) ** -np.linspace(0, horizon, 201)[1:]).mean())
    )
    # the columns of the training rows, those a category first seen later adds too
    at = _aligned([rows.X.drop(columns=list(HYBRID_COLUMNS), errors="ignore").head(0), at])[1]
    scene = _Scene(at, when, windows, discount, share)
    if "hybrid" in methods:
        scene.hybrid_frame = at.copy()
        scene.hybrid_btyd = _add_btyd(
            job.project, job.prepared, scene.hybrid_frame, when, windows.days
        )
    for method in methods:  # a loop over the few candidates
        start = time.perf_counter()
        job.say(f"fitting {method}")
        try:
            if method == "btyd":
                predicted, lower, upper = _btyd_spend(job, scene)
            else:
                predicted, lower, upper = _ml_spend(job, method, rows, scene, out)
        except FitError as exc:
            # one candidate that cannot be fitted (no repeat buyers for the BTYD model, say)
            # leaves the others to be judged; the reason is kept
            out.failed[method] = str(exc).split("\n", 1)[0]
            continue
        out.predicted[method] = predicted
        out.intervals[method] = (lower, upper)
        if actual is not None:
            row: dict[str, Any] = {"model": method, **clv_metrics(actual, predicted)}
            row["coverage"] = float(((actual >= lower) & (actual <= upper)).mean())
            row["seconds"] = time.perf_counter() - start
            out.metrics.append(row)
            out.deciles[method] = decile_table(actual, predicted)
    if not out.predicted:
        raise FitError(
            "no CLV method could be fitted: "
            + "; ".join(f"{m}: {why}" for m, why in out.failed.items())
        )
    return out


def _btyd_spend(job: _Job, scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The BTYD candidate's CLV over the horizon from the scene's date, with its interval."""
    # parameter draws far out in a small base can overflow for a few customers: their
    # bounds fall back to the estimate below, without a warning
    # (the draws run on worker threads, which np.errstate does not reach)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cols, _ = btyd_columns(
            job.project,
            job.prepared,
            scene.at,
            horizon=job.horizon_days / job.unit,
            discount=scene.discount,
            level=job.level,
            as_of=scene.when,
        )
    # customers without a purchase: the BTYD model says nothing, 0 in the leaderboard
    mid = np.nan_to_num(cols[SCORED_CLV["clv"]], nan=0.0, posinf=0.0)
    bounds = [np.where(np.isfinite(cols[c]), cols[c], mid) for c in ("clv_lower", "clv_upper")]
    return mid, bounds[0], bounds[1]


def _ml_spend(
    job: _Job, method: str, rows: _Rows, scene: _Scene, out: _Outcome
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A machine-learned candidate's spend over the horizon from the scene's date, with its
    interval: fitted on the training rows, its intervals calibrated on the customers held out
    at the latest cutoff, carried from the window to the horizon and discounted. Keeps the
    model, its frame and how it becomes the CLV in ``out``."""
    hybrid = method == "hybrid"
    frame = scene.hybrid_frame if hybrid else scene.at
    assert frame is not None
    columns = (
        list(rows.X.columns) if hybrid else [c for c in rows.X.columns if c not in HYBRID_COLUMNS]
    )
    model = SpendRegressor("lightgbm" if hybrid else method, level=job.level, seed=job.seed)
    train = ~rows.calibration
    model.fit(rows.X.loc[train, columns], rows.y[train])
    held = rows.calibration & rows.latest
    model.calibrate(rows.X.loc[held, columns], rows.y[held])
    window_spend = model.predict(frame[columns])
    lo, hi = model.interval(frame[columns], window_spend)
    if scene.carry is None:
        scene.carry, note, scene.carry_model = _carry(scene.at, scene.windows, job.unit)
        if note:
            out.notes.append(note)
    factor = scene.carry * scene.discount_share
    out.serving[method] = serving_spec(
        method=method,
        window=scene.windows.days / job.unit,
        horizon=job.horizon_days / job.unit,
        scale=scene.windows.scale,
        discount_share=scene.discount_share,
        carry=scene.carry_model,
        btyd=scene.hybrid_btyd if hybrid else None,
    )
    out.models[method] = model
    out.frames[method] = frame[columns]
    return window_spend * factor, lo * factor, hi * factor


def _carry(
    at: pd.DataFrame, windows: Windows, unit: float
) -> tuple[np.ndarray, str | None, dict[str, Any] | None]:
    """Each customer's factor from spend over the window to spend over the horizon (module
    docstring, step 1), a note saying what it is, and the BG/NBD model it came from (JSON;
    None for the window's rate); all 1 when the window is the horizon."""

    linear = np.full(len(at), windows.scale)
    if windows.days >= windows.horizon_days:
        return linear, None, None
    said = (
        f"the history allows windows of {windows.days} days, shorter than the horizon of "
        f"{windows.horizon_days}: the machine-learned spend over the window is carried to the "
        "horizon"
    )
    if not all(c in at.columns for c in SUMMARY_COLUMNS[:3]):
        return linear, f"{said} at the window's rate (x {windows.scale:.2f})", None
    x, tx_, t = (at[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in SUMMARY_COLUMNS[:3])
    buyers = np.isfinite(x) & np.isfinite(tx_) & np.isfinite(t)
    if not buyers.any():
        return linear, f"{said} at the window's rate (x {windows.scale:.2f}; nobody bought)", None
    try:
        with np.errstate(all="ignore"):
            bgnbd = BetaGeo().fit(x[buyers], tx_[buyers], t[buyers])
    except FitError as exc:
        why = str(exc).split("\n", 1)[0]
        return linear, f"{said} at the window's rate (x {windows.scale:.2f}; BG/NBD: {why})", None
    out = carry_factor(
        bgnbd,
        x,
        tx_,
        t,
        window=windows.days / unit,
        horizon=windows.horizon_days / unit,
        scale=windows.scale,
    )
    found = out[buyers]
    others = int((~buyers).sum())
    rest = (
        f"; x {windows.scale:.2f}, the window's rate, for {others:,} customers without a purchase"
        if others
        else ""
    )
    note = (
        f"{said} along each customer's BG/NBD curve of expected purchases (x "
        f"{np.median(found):.2f} for the median buyer, {found.min():.2f} to {found.max():.2f}"
        f"{rest})"
    )
    return out, note, {"model": "BetaGeo", "params": dict(bgnbd.params_)}


def _reasons(
    model: Any, frame: pd.DataFrame | None, top_k: int, catalogue: dict[str, str] | None
) -> pd.DataFrame | None:
    """The chosen machine-learned model's top reasons for each customer's CLV."""

    if model is None or frame is None:
        return None
    contrib, _ = model.contributions(frame)
    described = {**(catalogue or {}), **HYBRID_DESCRIPTIONS}
    return reason_columns(
        model.schema_, frame, contrib, top_k=top_k, catalogue=described, ending=" the expected CLV"
    )
