"""The calendar of the sample company's sales: a yearly cycle, a weekly cycle and promotion
weeks, as one multiplier per day of the history (mean 1), and the time warp that turns a
homogeneous Poisson process into one whose intensity follows it.

A customer buying at rate lambda while alive buys at lambda x s(t) on day t. Event times of
such a process are the images of a homogeneous process's under the inverse of the cumulative
intensity S(t) = integral of s (Cinlar's time change; Ross, *Simulation*, §5.5): the generator
draws its purchases in S-time exactly as before and maps them back. The purchase count of a
window [t1, t2) is Poisson(lambda (S(t2) - S(t1))), and the order of a customer's events, hence
the BG/NBD dropout after each one, is unchanged. Signups follow the same calendar times the
linear growth of the acquisition curve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from custval.data._synth_base import DAY

__all__ = ["Calendar", "Season"]


@dataclass(frozen=True)
class Season:
    """The planted calendar (written to ``truth/params.json``)."""

    #: the yearly cycle: 1 + amplitude x cos(2 pi (day of year - peak) / 365.25)
    yearly_amplitude: float = 0.2
    # at the turn of the year (December and January high, the summer low): any half-year
    # from January or July then averages 1, so that the usual six-month holdouts of the CLV
    # models see no more seasonal lift than their calibration
    yearly_peak_day: int = 1
    #: Monday to Sunday, before the whole calendar is scaled to mean 1
    weekday: tuple[float, ...] = (0.9, 0.9, 0.95, 1.0, 1.1, 1.2, 0.95)
    #: promotion weeks: the Monday-to-Sunday week holding these (month, day) dates
    promotions: tuple[tuple[int, int], ...] = ((5, 15), (11, 28))  # one in each half-year
    promotion_lift: float = 1.6


def _promotion_days(days: pd.DatetimeIndex, season: Season) -> np.ndarray:
    """Whether each day is in a promotion week."""
    flag = np.zeros(days.size, dtype=bool)
    for year in range(days[0].year, days[-1].year + 1):  # a loop over a few years
        for month, day in season.promotions:
            start = date(year, month, day)
            monday = start - timedelta(days=start.weekday())
            flag |= (days >= pd.Timestamp(monday)) & (days < pd.Timestamp(monday + timedelta(7)))
    return flag


@dataclass
class Calendar:
    """The daily multipliers of the history from ``first`` (a day number since 1970-01-01,
    ``start // DAY``) and their cumulative sums at each day's start, in seconds."""

    first: int
    multiplier: np.ndarray
    promotion: np.ndarray
    season: Season

    @staticmethod
    def of(start: int, horizon: int, season: Season) -> Calendar:
        first, last = start // DAY, horizon // DAY
        days = pd.to_datetime(np.arange(first, last), unit="D")
        yearly = 1.0 + season.yearly_amplitude * np.cos(
            2 * np.pi * (days.day_of_year.to_numpy() - season.yearly_peak_day) / 365.25
        )
        weekly = np.asarray(season.weekday)[days.day_of_week.to_numpy()]
        promotion = _promotion_days(days, season)
        s = yearly * weekly * np.where(promotion, season.promotion_lift, 1.0)
        return Calendar(first, s / s.mean(), promotion, season)

    @property
    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        seconds = (self.first + np.arange(self.multiplier.size + 1)) * DAY
        return seconds.astype(np.float64), np.concatenate([[0.0], np.cumsum(self.multiplier)]) * DAY

    def warp(self, t: np.ndarray) -> np.ndarray:
        """S(t): calendar seconds to intensity seconds (1 second of an average day is 1)."""
        seconds, cum = self._knots
        return np.interp(np.asarray(t, np.float64), seconds, cum)

    def unwarp(self, s: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`warp`: intensity seconds back to calendar seconds (int64)."""
        seconds, cum = self._knots
        return np.floor(np.interp(np.asarray(s, np.float64), cum, seconds)).astype(np.int64)

    def signups(self, u: np.ndarray, trend: float) -> np.ndarray:
        """Signup times (seconds) for uniforms ``u``: the density rises linearly by a factor
        1 + ``trend`` over the history and follows the calendar."""
        growth = 1.0 + trend * (np.arange(self.multiplier.size) + 0.5) / self.multiplier.size
        weight = growth * self.multiplier
        cum = np.concatenate([[0.0], np.cumsum(weight)]) / weight.sum()
        seconds = (self.first + np.arange(self.multiplier.size + 1)) * DAY
        return np.floor(np.interp(u, cum, seconds.astype(np.float64))).astype(np.int64)

    def truth(self, trend: float) -> pd.DataFrame:
        """Per day: the sales multiplier, the promotion flag and the relative signup rate."""
        n = self.multiplier.size
        growth = 1.0 + trend * (np.arange(n) + 0.5) / n
        return pd.DataFrame(
            {
                "day": pd.to_datetime(np.arange(self.first, self.first + n), unit="D").date,
                "sales_multiplier": self.multiplier,
                "promotion": self.promotion,
                "signup_rate": growth * self.multiplier / (growth * self.multiplier).mean(),
            }
        )

    def meta(self) -> dict[str, Any]:
        return {
            **asdict(self.season),
            "note": "purchase intensity x sales_multiplier of the day (truth/calendar.parquet); "
            "signups x the same multiplier x the linear signup trend",
        }
