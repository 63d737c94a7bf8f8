"""The store's table of run profiles (issue 19): per run and column of its features or
outputs, the drift profile (:mod:`custval.models.drift`: bin edges or categories, and counts),
as JSON text. Counts, not customers: a run of a million customers keeps a few kilobytes here,
and a later run is compared with any earlier one without reading its rows.

- ``run_profiles``: run_id, ``source`` (``features`` or ``outputs``), ``feature``, ``kind``
  (numeric or categorical), ``n`` (the values counted, missing ones included) and ``profile``
  (the JSON of :meth:`custval.models.drift.Profile.to_dict`).
"""

from __future__ import annotations

from typing import Any

PROFILE_TABLE_COLUMNS = {
    "run_id": "TEXT",
    "source": "TEXT",
    "feature": "TEXT",
    "kind": "TEXT",
    "n": "BIGINT",
    "profile": "TEXT",
}
MONITORING_TABLES = {"run_profiles": PROFILE_TABLE_COLUMNS}


def migration(create: Any) -> list[str]:
    """Migration 10's statements (``create`` writes a CREATE TABLE)."""
    return [
        create("run_profiles", PROFILE_TABLE_COLUMNS),
        "CREATE INDEX run_profiles_run ON run_profiles (run_id, source, feature)",
    ]
