"""A tiny hand-made company whose features are computed by hand in test_features.py.

as_of is 2024-03-01. Rows marked AFTER lie on or after as_of and must not change any feature.
"""

from __future__ import annotations

import csv
from pathlib import Path

AS_OF = "2024-03-01"

CRM = [
    (
        "crm_id",
        "signup_date",
        "birth_date",
        "region",
        "acquisition_channel",
        "plan",
        "services",
        "segment_label",
    ),
    ("C1", "2023-06-01", "1990-03-01", "North", "search", "premium", "streaming;backup", "vip"),
    ("c2 ", "15.12.2023", "", "south", "social", "basic", "", ""),
    ("C3", "2024-04-01", "1980-01-01", "east", "direct", "free", "", ""),
    ("C4", "2023/01/01", "2000-06-30", "west", "referral", "free", "support", "occasional"),
]
ID_MAP = [
    ("crm_id", "account_id", "visitor_id"),
    ("C1", "A1", "V1"),
    ("C2", "a2", ""),
    ("C3", "A3", "V3"),
    ("C4", "", "V4"),
]
TRANSACTIONS = [
    ("order_id", "account_id", "ts", "amount", "category", "channel"),
    ("O1", "A1", "2024-01-01 10:00:00", "100.00", "books", "web"),
    ("O2", "A1", "2024/01/01 15:00", "50.00", "home", "app"),
    ("O3", "A1", "15.01.2024 09:00", "1,200.00", "Home", "web"),
    ("O4", "A1", "2024-02-10 12:00:00", "30.00", "books", "web"),
    ("R1", "A1", "2024-02-12 08:00:00", "-50.00", "home", "web"),
    ("O6", "A2", "2024-02-20 11:00:00", "20.00", "sports", "branch"),
    ("O6", "A2", "2024-02-20 11:00:00", "20.00", "sports", "branch"),  # exact duplicate
    ("O7", " a2 ", "2099-01-01 10:00:00", "10.00", "sports", "branch"),  # future: dropped
    ("O8", "A9", "2024-01-01 10:00:00", "5.00", "books", "web"),  # not in the id map
    ("O9", "A1", "2024-01-20 10:00:00", "0.00", "", ""),  # a free order: categories unknown
]
WEB = [
    (
        "session_id",
        "visitor_id",
        "started_at",
        "page_views",
        "duration_sec",
        "blogs_viewed",
        "videos_viewed",
        "whitepapers_viewed",
        "converted",
    ),
    ("S1", "V1", "2024-02-01 10:00:00", "10", "600", "1", "0", "1", "true"),
    ("S2", "v1", "2024-02-15 10:00:00", "4", "120", "0", "2", "0", "false"),
    ("S3", "V4", "2024-01-10 10:00:00", "", "60", "0", "0", "0", "no"),
]
PRODUCT = [
    ("account_id", "date", "features_used", "sessions", "time_sec"),
    ("A1", "2024-02-01", "3", "2", "1200"),
    ("A1", "2024-02-02", "5", "1", "600"),
    ("A2", "2024-02-25", "1", "1", "60"),
]
TICKETS = [
    ("ticket_id", "crm_id", "opened_at", "kind", "resolved", "resolution_hours"),
    ("T1", "C1", "2024-02-01 09:00:00", "complaint", "true", "5"),
    ("T2", "c2", "2024-02-20 09:00:00", "question", "", ""),
    ("T3", "C2", "2024-01-05 09:00:00", "incident", "false", ""),
]

# On or after as_of: must change nothing.
AFTER = {
    "crm_customers": [("C5", "2024-03-01", "1970-01-01", "north", "search", "premium", "x", "")],
    "id_map": [("C5", "A5", "V5")],
    "transactions": [
        ("O10", "A1", "2024-03-01 00:00:00", "999.00", "garden", "phone"),
        ("O11", "A2", "2024-03-05 10:00:00", "5.00", "books", "web"),
        ("O12", "A5", "2024-03-02 10:00:00", "5.00", "books", "web"),
        ("R2", "A1", "2024-03-02 10:00:00", "-100.00", "books", "web"),
    ],
    "web_sessions": [
        ("S4", "V1", "2024-03-01 00:00:00", "100", "6000", "9", "9", "9", "true"),
        ("S5", "V5", "2024-03-03 00:00:00", "1", "1", "1", "1", "1", "true"),
    ],
    "product_usage": [("A1", "2024-03-01", "50", "9", "9000"), ("A2", "2024-04-01", "1", "1", "1")],
    "interactions": [("T4", "C1", "2024-03-10 09:00:00", "complaint", "true", "1")],
}

TABLES = {
    "crm_customers": CRM,
    "id_map": ID_MAP,
    "transactions": TRANSACTIONS,
    "web_sessions": WEB,
    "product_usage": PRODUCT,
    "interactions": TICKETS,
}


def rows(name: str, after: bool = False) -> list[tuple]:
    """Header and rows of one table, with the after-as_of rows when ``after``."""
    return list(TABLES[name]) + (AFTER.get(name, []) if after else [])


def project_toml(uris: dict[str, str], extra: dict[str, str] | None = None) -> str:
    """A project file whose sources are at ``uris`` (name -> uri); ``extra`` adds lines per
    source (e.g. table = "x")."""
    extra = extra or {}
    spec = {
        "crm_customers": ("customers", "crm_id", {"customer_id": "crm_id"}),
        "transactions": (
            "transactions",
            "account_id",
            {"customer_id": "account_id", "timestamp": "ts"},
        ),
        "web_sessions": (
            "web_sessions",
            "visitor_id",
            {"customer_id": "visitor_id", "timestamp": "started_at"},
        ),
        "product_usage": ("product_usage", "account_id", {"customer_id": "account_id"}),
        "interactions": (
            "interactions",
            "crm_id",
            {"customer_id": "crm_id", "timestamp": "opened_at"},
        ),
        "id_map": ("id_map", None, {}),
    }
    lines = [
        f'as_of = "{AS_OF}"',
        'time_unit = "weeks"',
        "[identity]",
        'map_source = "id_map"',
        'primary = "crm_id"',
        "[features]",
        "trend_window_days = 30",
    ]
    for name, uri in uris.items():
        kind, ns, cols = spec[name]
        lines += [f"[sources.{name}]", f'kind = "{kind}"', f'uri = "{uri}"']
        if ns:
            lines.append(f'id_namespace = "{ns}"')
        if name in extra:
            lines.append(extra[name])
        if cols:
            lines.append(f"[sources.{name}.columns]")
            lines += [f'{k} = "{v}"' for k, v in cols.items()]
    return "\n".join(lines) + "\n"


def write_csv_company(folder: Path, after: bool = False) -> Path:
    """Write the company as CSV files and a project file; returns the project file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        with (folder / f"{name}.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows(name, after))
    config = folder / "custval.toml"
    config.write_text(project_toml({name: f"{name}.csv" for name in TABLES}))
    return config
