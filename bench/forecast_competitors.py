"""Forecasting competitors for bench/forecast.py: statsforecast (AutoETS, AutoTheta) and Prophet,
each run in its own virtual environment, never as a dependency of custval.

statsforecast caps pandas < 3 and Prophet brings cmdstanpy, a Stan model binary, holidays and
matplotlib (and caps python-dateutil < 3), so each competitor lives in ``bench/.data/venv-<name>``,
created on first use from ``bench/requirements-<name>.txt`` (``python3 -m venv``, then ``pip
install -r``; a stamp file holding the requirements' text says when it is up to date), as
bench/uplift.py does for causalml. ``run_competitor`` writes the series to Parquet in a temporary
folder and runs this same file with the venv's interpreter (``python
bench/forecast_competitors.py child ARGS.json``); the child imports only its venv's packages and
the standard library, writes the forecasts to Parquet and its fit + predict seconds to JSON.

Rolling origins: for origin ``n`` every model sees the first ``n`` periods of each series (a
series with fewer than ``n`` periods is left out at that origin) and forecasts steps
``1..horizon``, the periods ``n..n+horizon-1``. Each fit is independent of the other origins.

What each competitor is run with, and why (the settings a careful user would choose)
------------------------------------------------------------------------------------
statsforecast (2.1.1): ``StatsForecast(models=[AutoETS(season_length=m)], freq=...,
n_jobs=1).forecast(df, h, level=[80, 95])``, one call per origin for all series (the library's
own batch path), then the same with ``AutoTheta(season_length=m)``; ``freq`` is "W-MON" for
weekly periods (Monday starts, m = 52) and "MS" for months (m = 12).

* ``AutoETS`` (Hyndman et al. 2002; 2008, *Forecasting with Exponential Smoothing*): the default
  ``model="ZZZ"`` tries every error (A, M), trend (N, A, damped A) and season (N, A, M)
  combination the data allow and keeps the lowest AICc, as R's ``forecast::ets``. Its intervals
  are its own: the analytic variances of the selected state-space model (classes 1-3 of
  Hyndman et al. 2005), at 80% and 95%.
  Season length 52: R's ``ets`` refuses seasonal models for frequencies above 24 (and ignores
  the season under "ZZZ"). statsforecast 2.1.1 has no such cap in fitting (its only ``m > 24``
  check is in ``etssimulate``, which forecasting does not use): it fits the seasonal
  candidates with 51 free initial seasonal states and lets AICc judge them; a candidate whose
  parameters reach ``n - 1`` gets an infinite AICc, and ``n <= m`` drops the season. On two or
  three years of weekly data the ~55 extra parameters are penalised away and a non-seasonal
  model wins (measured on a sine-seasonal series: AAdN at 100 weeks, AANN at 160), while at 416
  weeks (8 years) AAAN is chosen. We leave this as the library does it: it is what a user of
  ``AutoETS(season_length=52)`` gets, and what Nixtla documents for weekly data.
* ``AutoTheta`` (Assimakopoulos and Nikolopoulos 2000; Fiorucci et al. 2016): the standard,
  optimised and dynamic (optimised) Theta models, the lowest in-sample MSE kept. When ``n >=
  2m`` and the lag-m autocorrelation passes the 90% test of the M competitions, it first
  deseasonalises by classical multiplicative decomposition (additive when the data are not
  positive), so unlike AutoETS it does use a yearly season on two years of weekly data. Its
  intervals are quantiles of simulated paths of the state-space Theta model. It is cheap (a few
  milliseconds a series), so it is reported beside AutoETS.

Prophet (1.5.0; Taylor and Letham 2018): ``Prophet(yearly_seasonality=True,
weekly_seasonality=False, daily_seasonality=False, interval_width=0.8)``, one fit per series per
origin, everything else at its defaults (linear growth, 25 potential changepoints in the first 80%
of the history, ``changepoint_prior_scale`` 0.05, additive yearly Fourier terms of order 10, MAP fit
by L-BFGS in the Stan model that ships compiled in the wheel, run by cmdstanpy: no cmdstan download,
nothing fetched). Yearly seasonality is set explicitly because Prophet's "auto" turns it off below
two years of history (the 100-week origin), which no one forecasting seasonal weekly data would want
(and off below one whole season, or when the caller asks for no season: a cycle never seen cannot be
learnt); weekly and daily seasonality describe patterns inside a week or a day, which weekly or
monthly periods cannot show. The point is ``yhat``. Prophet's uncertainty comes from 1,000 draws of
future trend changes plus the observation noise; the 80% band is the 10th-90th percentile of those
draws (the rule ``predict`` uses for ``interval_width=0.8``) and the 95% band the 2.5th-97.5th of
the SAME draws: one sampling pass, bands that nest, instead of a second ``predict``. ``numpy``'s
seed is set to 0 before each fit, so the draws repeat. In MAP mode the draws ignore the uncertainty
of the seasonal and trend parameters, so Prophet's bands are known to run narrow.

Failures: a series the library cannot fit (statsforecast raises on fewer than about 5-6
points, Prophet on fewer than 2) gets a naive forecast instead, marked in the column ``note``
("naive: <the library's error>"): the last observed value, with random-walk bands
``+- z * sigma * sqrt(step)``, sigma the root mean square of the first differences (zero, so
degenerate bands, when there is only one point). An all-zero series is not a failure: both
libraries forecast zero. statsforecast fits the batch first and only on an error again series by
series, so one bad series does not cost the others their model.

Run: ``.venv/bin/python bench/forecast_competitors.py`` for the self-check (two synthetic weekly
series of 160 weeks, origins 100, 108, 116, horizon 26: mean absolute error, interval coverage
and seconds per method, the seasonal naive for scale); it creates both environments when they
are missing (statsforecast ~0.6 GB, Prophet ~0.5 GB).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from competitor_env import venv_python

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
COMPETITORS = ("statsforecast", "prophet")
#: custval's frequency names -> pandas offsets of the period starts
FREQS = {"week": "W-MON", "month": "MS"}
LEVELS = (80, 95)
COLUMNS = [
    "series",
    "origin",
    "step",
    "method",
    "point",
    "lo_80",
    "hi_80",
    "lo_95",
    "hi_95",
    "note",
]


# ---- the parent side (custval's environment) ------------------------------------------------


def competitor_python(name: str) -> Path:
    """The interpreter of ``bench/.data/venv-<name>`` (made on first use)."""
    if name not in COMPETITORS:
        raise ValueError(f"unknown competitor {name!r}; one of {COMPETITORS}")
    return venv_python(name)


def check_series(series: pd.DataFrame, freq: str) -> None:
    """Fail early, in the parent, on input the child would misread."""
    if freq not in FREQS:
        raise ValueError(f"freq must be one of {sorted(FREQS)}, not {freq!r}")
    missing = {"series", "period", "y"} - set(series.columns)
    if missing:
        raise ValueError(f"series lacks columns {sorted(missing)}")
    period = pd.to_datetime(series["period"])
    if (period != period.dt.normalize()).any():
        raise ValueError("period must hold dates (period starts), not times of day")
    if freq == "week" and (period.dt.day_of_week != 0).any():
        raise ValueError("weekly periods must start on Mondays")
    if freq == "month" and not period.dt.is_month_start.all():
        raise ValueError("monthly periods must start on the 1st")


def child_env() -> dict[str, str]:
    """The environment without anything that would let custval's packages leak into the child."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def run_competitor(
    name: str,
    series: pd.DataFrame,
    horizon: int,
    season_length: int,
    freq: str,
    origins: list[int],
    timeout: float | None = None,
) -> pd.DataFrame:
    """Forecasts of competitor ``name`` at every origin, from its own environment.

    ``series``: columns series (str), period (datetime64, the period's start), y (float).
    Returns one row per series, origin, step and method with the columns ``COLUMNS`` (``note``
    is "" unless the library failed and the naive forecast stands in). ``attrs["seconds"]`` is
    a dict method -> the child's fit + predict seconds summed over all origins and series
    (imports, file exchange and the interpreter's start excluded); ``attrs["versions"]`` the
    competitor's package versions. Raises ``TimeoutError`` when the child runs past
    ``timeout`` seconds (it is then killed) and ``RuntimeError`` with the end of its stderr when
    it fails.
    """
    check_series(series, freq)
    py = competitor_python(name)
    with tempfile.TemporaryDirectory(prefix=f"forecast-{name}-") as tmp:
        folder = Path(tmp)
        frame = series[["series", "period", "y"]].copy()
        frame["series"] = frame["series"].astype(str)
        frame["period"] = pd.to_datetime(frame["period"]).astype("datetime64[us]")
        frame["y"] = frame["y"].astype("float64")
        frame.to_parquet(folder / "series.parquet", index=False)
        args = {
            "name": name,
            "series": str(folder / "series.parquet"),
            "out": str(folder / "forecasts.parquet"),
            "meta": str(folder / "meta.json"),
            "horizon": int(horizon),
            "season_length": int(season_length),
            "freq": FREQS[freq],
            "origins": [int(n) for n in origins],
        }
        (folder / "args.json").write_text(json.dumps(args))
        command = [str(py), str(Path(__file__).resolve()), "child", str(folder / "args.json")]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=child_env()
            )
        except subprocess.TimeoutExpired as err:
            raise TimeoutError(f"{name} did not finish within {timeout} s") from err
        if done.returncode != 0:
            raise RuntimeError(f"{name} side failed:\n" + done.stderr[-3000:])
        out = pd.read_parquet(folder / "forecasts.parquet")
        meta = json.loads((folder / "meta.json").read_text())
    out.attrs["seconds"] = meta["seconds"]
    out.attrs["versions"] = meta["versions"]
    return out


# ---- the child side (the competitor's environment: its packages and the stdlib only) --------


def naive(y: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
    """Random-walk forecast: the last finite value, bands ``+- z sigma sqrt(h)`` with sigma the
    root mean square of the first differences (zero when there is a single point)."""
    from statistics import NormalDist

    finite = y[np.isfinite(y)]
    last = float(finite[-1]) if finite.size else 0.0
    diffs = np.diff(finite)
    sigma = float(np.sqrt(np.mean(diffs**2))) if diffs.size else 0.0
    spread = sigma * np.sqrt(np.arange(1, horizon + 1))
    out = {"point": np.full(horizon, last)}
    for level in LEVELS:
        z = NormalDist().inv_cdf(0.5 + level / 200)
        out[f"lo_{level}"] = last - z * spread
        out[f"hi_{level}"] = last + z * spread
    return out


def rows(
    sid: str, origin: int, method: str, values: dict[str, np.ndarray], note: str = ""
) -> pd.DataFrame:
    """One (series, origin, method)'s forecast in the output's columns."""
    horizon = len(values["point"])
    frame = pd.DataFrame(
        {
            "series": sid,
            "origin": origin,
            "step": np.arange(1, horizon + 1),
            "method": method,
            **{k: np.asarray(values[k], dtype="float64") for k in COLUMNS[4:9]},
        }
    )
    frame["note"] = note
    return frame


def history(data: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first ``n`` periods of every series that has at least ``n``."""
    size = data.groupby("series")["y"].transform("size")
    return data[size >= n].groupby("series", sort=True).head(n)


def failure(err: Exception) -> str:
    return f"naive: {type(err).__name__}: {err}"[:200]


def statsforecast_batch(make, train: pd.DataFrame, horizon: int, freq: str) -> pd.DataFrame:
    """One StatsForecast call on ``train`` (unique_id, ds, y); the forecast in our columns."""
    from statsforecast import StatsForecast

    model = make()
    sf = StatsForecast(models=[model], freq=freq, n_jobs=1)
    fc = sf.forecast(df=train, h=horizon, level=list(LEVELS))
    fc = fc.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    alias = model.alias
    out = pd.DataFrame(
        {
            "series": fc["unique_id"].astype(str),
            "step": fc.groupby("unique_id").cumcount() + 1,
            "point": fc[alias],
        }
    )
    for level in LEVELS:
        out[f"lo_{level}"] = fc[f"{alias}-lo-{level}"]
        out[f"hi_{level}"] = fc[f"{alias}-hi-{level}"]
    out["note"] = ""
    return out


def statsforecast_origin(make, train: pd.DataFrame, horizon: int, freq: str) -> pd.DataFrame:
    """All series at one origin: the batch, or on an error each series alone (naive on its
    own error), so that one unfittable series leaves the others their model."""
    try:
        return statsforecast_batch(make, train, horizon, freq)
    except Exception:  # retried series by series below
        pass
    parts = []
    for sid, one in train.groupby("unique_id", sort=True):
        try:
            parts.append(statsforecast_batch(make, one, horizon, freq))
        except Exception as err:  # any library error means "use naive"
            part = rows(str(sid), 0, "", naive(one["y"].to_numpy(), horizon), failure(err))
            parts.append(part.drop(columns=["origin", "method"]))
    return pd.concat(parts, ignore_index=True)


def run_statsforecast(data: pd.DataFrame, args: dict) -> tuple[list[pd.DataFrame], dict]:
    from statsforecast.models import AutoETS, AutoTheta

    m = args["season_length"]
    makers = {
        "statsforecast AutoETS": lambda: AutoETS(season_length=m),
        "statsforecast AutoTheta": lambda: AutoTheta(season_length=m),
    }
    frames, seconds = [], {}
    for method, make in makers.items():
        seconds[method] = 0.0
        for n in args["origins"]:
            train = history(data, n).rename(columns={"series": "unique_id", "period": "ds"})
            if train.empty:
                continue
            t0 = time.perf_counter()
            part = statsforecast_origin(make, train, args["horizon"], args["freq"])
            seconds[method] += time.perf_counter() - t0
            part.insert(1, "origin", n)
            part.insert(3, "method", method)
            frames.append(part[COLUMNS])
    return frames, seconds


def prophet_one(
    hist: pd.DataFrame, future: pd.DatetimeIndex, yearly: bool = True
) -> dict[str, np.ndarray]:
    """Prophet fitted to one history; yhat and both bands from one set of 1,000 draws.
    ``yearly``: the yearly seasonality, off for less than a year of history (a careful user
    does not ask Prophet for a season it has never seen)."""
    from prophet import Prophet

    np.random.seed(0)  # Prophet draws its future trend changes from numpy's global state
    model = Prophet(
        yearly_seasonality=yearly,
        weekly_seasonality=False,
        daily_seasonality=False,
        interval_width=0.8,
    )
    model.fit(pd.DataFrame({"ds": hist["period"].to_numpy(), "y": hist["y"].to_numpy()}))
    ahead = pd.DataFrame({"ds": future})
    draws = model.uncertainty_samples
    model.uncertainty_samples = 0  # yhat only: the draws are taken once, below
    out = {"point": model.predict(ahead)["yhat"].to_numpy()}
    model.uncertainty_samples = draws
    sims = model.predictive_samples(ahead)["yhat"]
    for level in LEVELS:
        out[f"lo_{level}"] = model.percentile(sims, 50 - level / 2, axis=1)
        out[f"hi_{level}"] = model.percentile(sims, 50 + level / 2, axis=1)
    return out


def run_prophet(data: pd.DataFrame, args: dict) -> tuple[list[pd.DataFrame], dict]:
    import logging

    import prophet  # noqa: F401 - imported first: cmdstanpy sets its logger's level on import
    from pandas.tseries.frequencies import to_offset

    for logger in ("cmdstanpy", "prophet"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    step = to_offset(args["freq"])
    horizon, method = args["horizon"], "Prophet"
    frames, seconds = [], {method: 0.0}
    for n in args["origins"]:
        for sid, hist in history(data, n).groupby("series", sort=True):
            future = pd.date_range(hist["period"].iloc[-1] + step, periods=horizon, freq=step)
            t0 = time.perf_counter()
            try:
                yearly = args["season_length"] > 1 and len(hist) >= args["season_length"]
                values, note = prophet_one(hist, future, yearly), ""
            except Exception as err:  # any library error means "use naive"
                values, note = naive(hist["y"].to_numpy(), horizon), failure(err)
            seconds[method] += time.perf_counter() - t0
            frames.append(rows(str(sid), n, method, values, note))
    return frames, seconds


def child_main(args_path: Path) -> int:
    """The child: read the series, forecast at every origin, write forecasts and seconds."""
    import warnings
    from importlib.metadata import version

    warnings.filterwarnings("ignore")
    args = json.loads(args_path.read_text())
    data = pd.read_parquet(args["series"])
    data["series"] = data["series"].astype(str)
    data = data.sort_values(["series", "period"], kind="stable").reset_index(drop=True)
    name = args["name"]
    if name == "statsforecast":
        frames, seconds = run_statsforecast(data, args)
        packages = ("statsforecast", "pandas", "numpy")
    elif name == "prophet":
        frames, seconds = run_prophet(data, args)
        packages = ("prophet", "cmdstanpy", "pandas", "numpy")
    else:
        raise ValueError(f"unknown competitor {name!r}")
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    out = out[COLUMNS].astype({"origin": "int64", "step": "int64"})
    out.to_parquet(args["out"], index=False)
    meta = {"seconds": seconds, "versions": {p: version(p) for p in packages}}
    Path(args["meta"]).write_text(json.dumps(meta))
    return 0


# ---- self-check -------------------------------------------------------------------------------


def synthetic_weekly(weeks: int = 160, seed: int = 0) -> pd.DataFrame:
    """Two weekly series: level + trend + a yearly sine (period 52.18 weeks) + Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(weeks)
    period = pd.date_range("2021-01-04", periods=weeks, freq="W-MON")  # a Monday
    parts = []
    for sid, (level, slope, amp, phase, noise) in {
        "a": (100.0, 0.30, 20.0, 0.0, 5.0),
        "b": (40.0, -0.05, 8.0, 1.5, 3.0),
    }.items():
        season = amp * np.sin(2 * math.pi * t / 52.18 + phase)
        y = level + slope * t + season + rng.normal(0.0, noise, weeks)
        parts.append(pd.DataFrame({"series": sid, "period": period, "y": y}))
    return pd.concat(parts, ignore_index=True)


def seasonal_naive(series: pd.DataFrame, origins: list[int], horizon: int, m: int) -> pd.DataFrame:
    """The same period a season earlier, for scale (needs ``n >= m``)."""
    out = []
    for sid, g in series.groupby("series"):
        y = g["y"].to_numpy()
        for n in origins:
            steps = np.arange(1, horizon + 1)
            point = y[n - m + (steps - 1) % m]
            nan = np.full(horizon, np.nan)
            values = {"point": point, **{k: nan for k in COLUMNS[5:9]}}
            out.append(rows(str(sid), n, "seasonal naive", values))
    return pd.concat(out, ignore_index=True)


def score(series: pd.DataFrame, forecasts: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute error and interval coverage per method against the series' own future."""
    actual = series.assign(index=series.groupby("series").cumcount())[["series", "index", "y"]]
    fc = forecasts.assign(index=forecasts["origin"] + forecasts["step"] - 1)
    both = fc.merge(actual, on=["series", "index"], how="inner")
    both["abs_err"] = (both["point"] - both["y"]).abs()
    for level in LEVELS:
        inside = (both["y"] >= both[f"lo_{level}"]) & (both["y"] <= both[f"hi_{level}"])
        both[f"cover_{level}"] = inside.where(both[f"lo_{level}"].notna())
    return both.groupby("method").agg(
        mae=("abs_err", "mean"),
        cover_80=("cover_80", "mean"),
        cover_95=("cover_95", "mean"),
        naive_rows=("note", lambda s: int((s != "").sum())),
    )


def self_check() -> int:
    series = synthetic_weekly()
    origins, horizon, m = [100, 108, 116], 26, 52
    print(f"self-check: 2 weekly series of 160 weeks, origins {origins}, horizon {horizon}")
    frames, seconds = [seasonal_naive(series, origins, horizon, m)], {"seasonal naive": 0.0}
    for name in COMPETITORS:
        t0 = time.perf_counter()
        competitor_python(name)
        print(f"  environment {name}: ready in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        fc = run_competitor(name, series, horizon, m, "week", origins, timeout=600)
        wall = time.perf_counter() - t0
        print(f"  {name} {fc.attrs['versions']}: {wall:.1f} s wall (child start included)")
        frames.append(fc)
        seconds.update(fc.attrs["seconds"])
    table = score(series, pd.concat(frames, ignore_index=True))
    table["seconds"] = pd.Series(seconds)
    print("\n" + table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        sys.exit(child_main(Path(sys.argv[2])))
    sys.exit(self_check())
