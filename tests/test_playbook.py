"""The playbook: a segment's offer, channel, timing and retention, and a customer's own, each
with its rule and numbers (custval.models.playbook)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from custval.errors import CustvalError
from custval.models.playbook import customer_playbooks, next_purchase_wait, segment_playbooks


def test_the_wait_to_the_next_purchase_is_the_lomax_quantile() -> None:
    # simulated: lambda from its gamma posterior, then an exponential wait given lambda
    rng = np.random.default_rng(0)
    r, alpha, x, T = 0.8, 4.0, 3.0, 30.0
    lam = rng.gamma(r + x, 1.0 / (alpha + T), 400_000)
    waits = rng.exponential(1.0 / lam)
    for q in (0.25, 0.5, 0.9):
        got = next_purchase_wait(r, alpha, [x], [T], quantile=q)[0]
        assert got == pytest.approx(np.quantile(waits, q), rel=0.01)
    # worked out: (alpha + T)(2^(1/(r + x)) - 1) = 34 * (2^(1/3.8) - 1)
    assert next_purchase_wait(r, alpha, [x], [T])[0] == pytest.approx(34 * (2 ** (1 / 3.8) - 1))
    # more purchases in the same time: a shorter wait
    w = next_purchase_wait(r, alpha, [0, 5, 20], [T, T, T])
    assert w[0] > w[1] > w[2]
    with pytest.raises(CustvalError, match="quantile"):
        next_purchase_wait(r, alpha, [x], [T], quantile=1.0)


def _customers() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ids = [f"C{i}" for i in range(8)]
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": ["loyal"] * 4 + ["lapsing"] * 4,
            "p_alive": [0.9, 0.8, 0.95, 0.7, 0.2, 0.3, 0.6, 0.1],
            "next_purchase_days": [10.0, 20.0, 30.0, 40.0, 90.0, 80.0, 60.0, 200.0],
            "share_orders_web": [0.8, 0.6, 0.7, 0.9, 0.1, 0.2, 0.0, 0.3],
            "share_orders_app": [0.2, 0.4, 0.3, 0.1, 0.9, 0.8, 1.0, 0.7],
            "favourite_channel": ["web", "web", "web", None, "app", "app", "app", "app"],
            "contact": [0, 0, 1, 0, 1, 1, 0, 0],
            "method": ["uplift"] * 8,
            "expected_profit": [-1.0, -2.0, 5.0, -1.0, 12.0, 8.0, -0.5, -3.0],
        }
    )
    propensity = pd.DataFrame(
        {
            "books": [0.8, 0.7, 0.9, 0.6, 0.1, 0.1, 0.2, 0.1],
            "home": [0.1, 0.2, 0.1, 0.2, 0.6, 0.7, 0.5, 0.4],
        },
        index=ids,
    )
    offers = pd.DataFrame(
        {
            "customer_id": ids * 2,
            "rank": [1] * 8 + [2] * 8,
            "label": ["Atlas"] * 3 + ["Novel"] + ["Lamp"] * 4 + ["Novel"] * 8,
        }
    )
    return customers, propensity, offers


def test_a_segment_playbook_gives_each_aspect_its_rule_and_numbers() -> None:
    customers, propensity, offers = _customers()
    rows = segment_playbooks(customers, propensity=propensity, offers=offers)
    assert len(rows) == 8 and set(rows["aspect"]) == {"offer", "channel", "timing", "retention"}
    got = {
        (r.segment, r.aspect): (r.recommendation, json.loads(r.numbers)) for r in rows.itertuples()
    }
    # offer: books for the loyal (mean 0.75 against 0.4375 in the base: 1.71x)
    text, numbers = got[("loyal", "offer")]
    assert next(iter(numbers["categories"])) == "books"
    assert numbers["categories"]["books"]["lift"] == pytest.approx(0.75 / 0.4375, abs=0.01)
    assert numbers["products"]["Atlas"] == pytest.approx(0.75)
    assert text.startswith("books (1.7x the base)")
    # channel: the mean order shares, largest first
    text, numbers = got[("lapsing", "channel")]
    assert numbers["order_shares"] == {"app": 0.85, "web": 0.15} and text.startswith("app (85%)")
    # timing: the median wait of active customers only (p_alive >= 0.5)
    text, numbers = got[("lapsing", "timing")]
    assert numbers["active"] == 1 and numbers["median_days"] == 60.0
    assert got[("loyal", "timing")][1]["median_days"] == 25.0
    # retention: the contacted customers' expected profit, by the uplift rule
    text, numbers = got[("lapsing", "retention")]
    assert numbers["contacted"] == 2 and numbers["expected_profit"] == 20.0
    assert (
        "uplift x value - cost > 0"
        in rows.set_index(["segment", "aspect"]).loc[("lapsing", "retention"), "rule"]
    )


def test_the_heuristic_is_named_as_such() -> None:
    customers, _, _ = _customers()
    customers["method"] = "heuristic"
    rows = segment_playbooks(customers)
    retention = rows[rows["aspect"] == "retention"]
    assert retention["recommendation"].str.contains("heuristic").all()
    assert retention["rule"].str.contains("no experiment").all()


def test_a_customer_playbook_falls_back_where_the_customer_has_no_value() -> None:
    customers, _, offers = _customers()
    rows = customer_playbooks(customers, offers=offers).set_index("customer_id")
    assert rows.loc["C0", "offer"] == "Atlas" and rows.loc["C4", "offer"] == "Lamp"
    # C3 has no favourite channel: their segment's (web for the loyal)
    assert rows.loc["C3", "channel"] == "web"
    assert rows.loc["C2", "retention"] == "contact" and rows.loc["C0", "retention"] == "no contact"
    assert rows.loc["C4", "reason"] == (
        "offer Lamp by app, in about 90 days; retention: contact (expected profit 12.0)"
    )


def test_the_playbook_needs_segments() -> None:
    customers, _, _ = _customers()
    with pytest.raises(CustvalError, match="segment"):
        segment_playbooks(customers.drop(columns="segment"))
