"""The store's monitoring tables (issue 19).

Migration 10:

- ``run_profiles``: per run and column of its features or outputs, the drift profile
  (:mod:`custval.models.drift`: bin edges or categories, and counts), as JSON text. Counts,
  not customers: a run of a million customers keeps a few kilobytes here, and a later run is
  compared with any earlier one without reading its rows. Columns: run_id, ``source``
  (``features`` or ``outputs``), ``feature``, ``kind`` (numeric or categorical), ``n`` (the
  values counted, missing ones included) and ``profile`` (the JSON of
  :meth:`custval.models.drift.Profile.to_dict`).

Migration 11:

- ``run_drift``: what ``custval monitor`` found for a run against a reference, a row per
  column (PSI, Jensen-Shannon distance, the critical PSI at these sample sizes, p-value,
  alarm as 0/1); a check of the same run against the same reference replaces the earlier one;
- ``run_performance``: the run's performance, a row per metric: ``estimated`` before labels
  (from the calibrated probabilities) or ``realised`` once they have matured, with a JSON
  ``detail`` (tables by decile, the migration matrix);
- ``model_decisions``: the registry's log: every promotion, rollback and retraining decision,
  with the version, the one it replaced, who forced it and why;
- the BI views ``v1_drift_by_run``, ``v1_performance_by_run`` and ``v1_model_versions``.
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
DRIFT_COLUMNS = {
    "run_id": "TEXT",
    "reference": "TEXT",
    "source": "TEXT",
    "feature": "TEXT",
    "kind": "TEXT",
    "psi": "DOUBLE PRECISION",
    "js_distance": "DOUBLE PRECISION",
    "critical_psi": "DOUBLE PRECISION",
    "p_value": "DOUBLE PRECISION",
    "alarm": "INTEGER",
    "n_reference": "BIGINT",
    "n_current": "BIGINT",
    "checked_at": "TIMESTAMP",
}
PERFORMANCE_COLUMNS = {
    "run_id": "TEXT",
    "kind": "TEXT",
    "metric": "TEXT",
    "value": "DOUBLE PRECISION",
    "detail": "TEXT",
    "checked_at": "TIMESTAMP",
}
DECISION_COLUMNS = {
    "decided_at": "TIMESTAMP",
    "action": "TEXT",
    "alias": "TEXT",
    "version": "TEXT",
    "previous": "TEXT",
    "forced": "INTEGER",
    "reason": "TEXT",
    "details": "TEXT",
}
MONITORING_TABLES = {
    "run_profiles": PROFILE_TABLE_COLUMNS,
    "run_drift": DRIFT_COLUMNS,
    "run_performance": PERFORMANCE_COLUMNS,
}
#: added to the BI contract v1 by migration 11 (view: grain)
BI_VIEWS_11 = {
    "v1_drift_by_run": "scoring run, reference and column checked by custval monitor",
    "v1_performance_by_run": "scoring run, kind (estimated or realised) and metric",
    "v1_model_versions": "model version known to the store, with its current aliases",
}


def migration(create: Any) -> list[str]:
    """Migration 10's statements (``create`` writes a CREATE TABLE)."""
    return [
        create("run_profiles", PROFILE_TABLE_COLUMNS),
        "CREATE INDEX run_profiles_run ON run_profiles (run_id, source, feature)",
    ]


def migration_11(create: Any, version: str) -> list[str]:
    """Migration 11's statements: drift and performance per run, the registry's decisions,
    and their BI views."""
    return [
        create("run_drift", DRIFT_COLUMNS),
        "CREATE INDEX run_drift_run ON run_drift (run_id, reference)",
        create("run_performance", PERFORMANCE_COLUMNS),
        "CREATE INDEX run_performance_run ON run_performance (run_id, kind)",
        create("model_decisions", DECISION_COLUMNS),
        *(
            f"INSERT INTO bi_contract VALUES ('{version}', '{view}', 'one row per {grain}')"
            for view, grain in BI_VIEWS_11.items()
        ),
        """CREATE VIEW v1_drift_by_run AS
            SELECT d.run_id, r.as_of, r.model_version, d.reference, d.source, d.feature,
                   d.kind, d.psi, d.js_distance, d.critical_psi, d.p_value, d.alarm,
                   d.n_reference, d.n_current, d.checked_at
            FROM run_drift d JOIN v1_runs r ON r.run_id = d.run_id""",
        """CREATE VIEW v1_performance_by_run AS
            SELECT p.run_id, r.as_of, r.model_version, p.kind, p.metric, p.value,
                   p.checked_at
            FROM run_performance p JOIN v1_runs r ON r.run_id = p.run_id""",
        # a version's aliases: those whose latest decision names it
        """CREATE VIEW v1_model_versions AS
            SELECT m.version, m.created_at, m.metrics, a.aliases
            FROM models m LEFT JOIN (
                SELECT version, STRING_AGG(alias, ',' ORDER BY alias) AS aliases
                FROM (SELECT alias, version, ROW_NUMBER() OVER (
                          PARTITION BY alias ORDER BY decided_at DESC) AS k
                      FROM model_decisions WHERE alias IS NOT NULL) latest
                WHERE k = 1 AND version IS NOT NULL
                GROUP BY version
            ) a ON a.version = m.version""",
    ]
