"""The names of the columns that the layers hand to each other about CLV: one place, so that a
feature table, the CLV models, a scoring run and the service agree on them.

Values only, no imports: every layer may name them.
"""

from __future__ import annotations

__all__ = [
    "BTYD_OUTPUTS",
    "CLV_INTERVAL",
    "HYBRID_COLUMNS",
    "HYBRID_DESCRIPTIONS",
    "HYBRID_SOURCES",
    "SCORED_CLV",
    "SUMMARY_COLUMNS",
]

#: the BTYD summary of a customer: repeat purchases, time from first to last purchase, age,
#: mean repeat spend (the rfm feature group, in the project's time unit)
SUMMARY_COLUMNS = ("frequency", "recency", "T", "monetary_value")

#: what the customer-base models predict per customer (:mod:`custval.models.btyd_clv`)
BTYD_OUTPUTS = (
    "p_alive",
    "expected_purchases",
    "expected_spend",
    "clv",
    "clv_lower",
    "clv_upper",
)

#: each CLV output and its column in a scoring run's predictions (store ``predictions``)
SCORED_CLV = {
    "clv": "clv_expected",
    "clv_lower": "clv_lower",
    "clv_upper": "clv_upper",
    "p_alive": "p_alive",
    "expected_purchases": "expected_purchases",
    "expected_spend": "expected_spend",
}

#: the CLV and its interval: what a machine-learned CLV method gives
CLV_INTERVAL = ("clv", "clv_lower", "clv_upper")

#: the columns the hybrid CLV adds from the BTYD model, over the training window
HYBRID_COLUMNS = ("btyd_spend", "btyd_p_alive", "btyd_purchases")

#: each hybrid column and the scored BTYD column it is (:data:`SCORED_CLV`), over the window
HYBRID_SOURCES = {
    "btyd_spend": "clv_expected",
    "btyd_p_alive": "p_alive",
    "btyd_purchases": "expected_purchases",
}

#: how the reasons of a hybrid CLV name them
HYBRID_DESCRIPTIONS = {
    "btyd_spend": "expected spend by the BTYD model",
    "btyd_p_alive": "P(alive) by the BTYD model",
    "btyd_purchases": "expected purchases by the BTYD model",
}
