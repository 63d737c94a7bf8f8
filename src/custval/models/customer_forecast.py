"""The customer-based (bottom-up) sales forecast: what the customers already known will buy,
customer by customer, plus what the customers still to come will buy.

For the periods ending at e_1 < ... < e_h (in the purchase model's time unit after the origin):

    existing base  sum_i P(alive | x_i, t_x_i, T_i) E[Y(t) | alive, x_i, T_i]
                   (Fader, Hardie & Lee 2005, "Counting your customers the easy way", eq. 10)
    new customers  A_k first purchases in period k, each followed by E[X(t - s_k)] repeat
                   purchases (eq. 9), s_k the middle of period k
    money          each customer's purchases x their expected spend per purchase (Gamma-Gamma,
                   FHL 2005 JMR eq. 5), a new customer's first purchase at the mean first
                   spend and their repeats at the population's mean spend, times the share
                   of gross sales kept after refunds

The sum over customers is the customer-based corporate valuation's revenue build-up (McCarthy
& Fader 2018, "Customer-based corporate valuation for publicly traded non-subscription
firms", JMR 55(5)): the forecast knows how many customers are alive and how often they buy,
which no aggregate series can see. The acquisitions A_k come from a forecast of the
acquisitions series (the caller's statistical model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from custval.errors import CustvalError

__all__ = [
    "base_purchases",
    "customer_forecast",
    "new_customer_purchases",
    "seasonal_index",
]

Array = npt.NDArray[np.float64]


def base_purchases(
    model: Any,
    frequency: Any,
    recency: Any,
    T: Any,
    horizons: Any,
    weights: Any = None,
) -> Array:
    """The existing base's expected repeat purchases by each of ``horizons`` (cumulative, in
    the model's time unit after the end of the data), from a fitted BG/NBD, MBG/NBD or
    Pareto/NBD model and each customer's (x, t_x, T):

        E[base purchases by t] = sum_i P(alive | x_i, t_x_i, T_i) E[Y(t) | alive, x_i, T_i]

    (Fader, Hardie & Lee 2005, eq. 10, split into its two factors; the second does not depend
    on t_x). One evaluation per distinct (x, T) and horizon, each weighted by the sum of its
    customers' P(alive): a million customers on a weekly grid have a few hundred thousand
    distinct pairs. The purchases in a period are the differences of the cumulative ones.
    ``weights``: a multiplier per customer (their expected spend per purchase, for revenue;
    default 1), or a matrix of them (customers x k) for k sums from one pass (horizons x k)."""
    x = np.asarray(frequency, dtype=np.float64)
    tx = np.asarray(recency, dtype=np.float64)
    tt = np.asarray(T, dtype=np.float64)
    ends = _horizons(horizons)
    alive = np.asarray(model.probability_alive(x, tx, tt), dtype=np.float64)
    given = np.ones(x.size) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.broadcast_to(given, x.shape) if given.ndim == 0 else given
    w = w.reshape(x.size, -1)
    pairs, inverse = np.unique(np.stack([x, tt]), axis=1, return_inverse=True)
    weight = np.column_stack(  # a column per weight vector (one or two)
        [
            np.bincount(inverse.ravel(), weights=alive * w[:, j], minlength=pairs.shape[1])
            for j in range(w.shape[1])
        ]
    )
    out = np.array([model._purchases_if_alive(float(h), pairs[0], pairs[1]) @ weight for h in ends])
    return out[:, 0] if weights is None or np.ndim(weights) == 1 else out


def new_customer_purchases(model: Any, arrivals: Any, arrival_times: Any, horizons: Any) -> Array:
    """The repeat purchases of customers still to come, by each of ``horizons`` (cumulative):
    ``arrivals[j]`` new customers at ``arrival_times[j]`` (same unit and origin as the
    horizons) each make E[X(t − s_j)] repeat purchases by t (Fader, Hardie & Lee 2005, eq. 9;
    ``model.expected_purchases_new_customer``), none before they arrive. Their first purchases
    are the arrivals themselves and are not counted here."""
    counts = np.asarray(arrivals, dtype=np.float64).ravel()
    starts = np.asarray(arrival_times, dtype=np.float64).ravel()
    if counts.shape != starts.shape:
        raise CustvalError(f"{counts.size} arrival counts against {starts.size} arrival times")
    ends = _horizons(horizons)
    lag = np.maximum(ends[:, None] - starts[None, :], 0.0)
    uniq, inverse = np.unique(lag, return_inverse=True)
    curve = np.asarray(model.expected_purchases_new_customer(uniq), dtype=np.float64)
    return curve[inverse.reshape(lag.shape)] @ counts


def _horizons(horizons: Any) -> Array:
    ends = np.asarray(horizons, dtype=np.float64).ravel()
    if ends.size == 0 or np.any(ends < 0) or np.any(np.diff(ends) < 0):
        raise CustvalError("the horizons must be non-negative and increasing")
    return ends


def customer_forecast(
    model: Any,
    frequency: Any,
    recency: Any,
    T: Any,
    ends: Any,
    *,
    arrivals: Any = None,
    spend: Any = None,
    first_spend: float = 0.0,
    new_spend: float = 0.0,
    net_share: float = 1.0,
) -> dict[str, Array]:
    """Per period ending at ``ends`` (module docstring): ``existing`` (the known customers'
    repeat purchases), ``first`` (the new customers' first purchases, ``arrivals``),
    ``new_repeat`` (their repeat purchases) and ``purchases``, their sum. With ``spend`` (each
    known customer's expected spend per purchase) also ``revenue``: the same in money, the new
    customers' first purchases at ``first_spend`` and repeats at ``new_spend``, times
    ``net_share`` (the share of gross sales left after refunds)."""
    ends = _horizons(ends)
    starts = np.concatenate([[0.0], ends[:-1]])
    first = np.zeros(ends.size) if arrivals is None else np.asarray(arrivals, np.float64)
    if first.shape != ends.shape:
        raise CustvalError(f"{first.size} periods of arrivals for {ends.size} periods")
    first = np.maximum(first, 0.0)
    n = np.size(frequency)
    weights = np.ones((n, 1)) if spend is None else np.column_stack([np.ones(n), spend])
    # one pass over the customers for the purchases and, with a spend, the money
    both = np.diff(base_purchases(model, frequency, recency, T, ends, weights), axis=0, prepend=0.0)
    existing = both[:, 0]
    # a period's newcomers arrive through it: on average at its middle
    new_repeat = np.diff(
        new_customer_purchases(model, first, (starts + ends) / 2, ends), prepend=0.0
    )
    out = {
        "existing": existing,
        "first": first,
        "new_repeat": new_repeat,
        "purchases": existing + first + new_repeat,
    }
    if spend is not None:
        money = both[:, 1]
        out["revenue"] = (money + first * first_spend + new_repeat * new_spend) * net_share
    return out


def seasonal_index(history: Any, m: int) -> Array | None:
    """The multiplicative seasonal index of each of the ``m`` phases of a season, from the
    classical decomposition (Hyndman & Athanasopoulos, *FPP3* §3.4): the series over its
    centred moving average of order m (2 x m for an even m), averaged by phase and scaled to
    mean 1. The customer models forecast a level with no calendar in it; the index puts the
    series' calendar back. None when the history has fewer than two seasons or a phase has no
    positive level to divide by."""
    y = np.asarray(history, dtype=np.float64)
    if m < 2 or y.size < 2 * m:
        return None
    weights = np.full(m + 1, 1.0 / m) if m % 2 == 0 else np.full(m, 1.0 / m)
    if m % 2 == 0:  # the 2 x m average centres an even window on a period
        weights[[0, -1]] = 0.5 / m
    trend = np.convolve(y, weights, mode="valid")
    lead = (weights.size - 1) // 2
    level = np.full(y.size, np.nan)
    level[lead : lead + trend.size] = trend
    ratio = np.where(level > 0, y / np.where(level > 0, level, 1.0), np.nan)
    phase = np.arange(y.size) % m
    sums = np.bincount(phase, weights=np.nan_to_num(ratio), minlength=m)
    counts = np.bincount(phase, weights=np.isfinite(ratio), minlength=m)
    if np.any(counts == 0):
        return None
    index = np.maximum(sums / counts, 0.0)
    return index / index.mean() if index.mean() > 0 else None
