"""A scoring run with the project's [actions]: churn risk, the targeting list and the playbooks
go into the store in the same all-or-nothing run as the predictions (custval.flows.actions)."""

# ruff: noqa: F811  (the service fixture of tests/test_api.py is imported, then named)

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import ibis
import pandas as pd
import pytest
from pydantic_core import to_json

from custval import flows
from custval.api.app import ServiceSettings
from custval.config import load_project
from custval.errors import CustvalError
from custval.store import open_store
from tests.factories import Companies, run
from tests.test_api import start  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def scored(companies: Companies, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("actions")
    # seed 18: with the calendar (issue 18) seed 17's small campaign (150 customers) let the
    # X-learner find no contact worth its cost, which is a right answer but tests nothing here
    company = companies.copy(root / "co", 2500, seed=18, fmt="parquet")
    project = load_project(company.config_path)
    prepared = flows.prepare(project)
    models = root / "models"
    flows.train_value(project, prepared=prepared, out_dir=models, candidates=("logistic",), folds=3)
    store = root / "store.duckdb"
    segments = flows.segment_table(flows.segment_features(project, prepared), k=3)
    flows.store_segments(segments, str(store), project.as_of)
    asked = project.actions.model_copy(
        update={
            "churn": True,
            "playbooks": True,
            "targeting_budget": 300.0,
            "propensity": True,
            "next_best_offers": 5,
        }
    )
    project = project.model_copy(update={"actions": asked})
    result = flows.score(project, store_url=store, models_dir=models, prepared=prepared)
    return {
        "project": project,
        "prepared": prepared,
        "store": store,
        "models": models,
        "result": result,
    }


def test_the_actions_fill_their_views_in_the_scoring_run(scored: dict) -> None:
    result = scored["result"]
    with open_store(scored["store"]) as s:
        run = s.query("SELECT DISTINCT run_id FROM v1_latest_churn_risk")
        assert run == [(result.run_id,)]
        kinds = s.query("SELECT DISTINCT label_kind, horizon_days FROM v1_latest_churn_risk")
        # the generated company has subscriptions: churn is a cancellation
        assert kinds == [("cancellation", 91)]
        risk = s.query("SELECT MIN(p_churn), MAX(p_churn), COUNT(*) FROM v1_latest_churn_risk")[0]
        assert 0 <= risk[0] < risk[1] <= 1 and risk[2] > 100
        # every scored subscriber has three reasons, the strongest first
        reasons = s.query(
            "SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM churn_reasons WHERE run_id = ?",
            (result.run_id,),
        )[0]
        assert reasons == (3 * risk[2], risk[2])
        # the targeting list: the campaign log exists, so uplift; within the budget
        method, spent, contacted = s.query(
            "SELECT MIN(method), SUM(cost * contact), SUM(contact) FROM v1_latest_targeting"
        )[0]
        assert method == "uplift" and 0 < spent <= 300.0 and contacted > 0
        profit = s.query("SELECT MIN(expected_profit) FROM v1_latest_targeting WHERE contact = 1")
        assert profit[0][0] > 0
        # the playbooks: four aspects per segment, each with its rule and numbers
        rows = s.query("SELECT segment, aspect, rule, numbers FROM v1_latest_playbooks")
        segments = {r[0] for r in rows}
        assert len(rows) == 4 * len(segments) and len(segments) == 3
        assert all(r[2] and isinstance(json.loads(r[3]), dict) for r in rows)
        own = s.query("SELECT COUNT(*), COUNT(channel) FROM v1_latest_customer_playbooks")[0]
        assert own[0] == result.customers and own[1] > 0.9 * own[0]


def test_propensities_and_offers_fill_their_views_and_the_playbooks(scored: dict) -> None:
    result = scored["result"]
    with open_store(scored["store"]) as s:
        # six categories in the generated catalogue: each customer has all six, ranked
        per = s.query(
            "SELECT COUNT(*), COUNT(DISTINCT customer_id), MIN(probability), MAX(probability), "
            "COUNT(DISTINCT category) FROM v1_latest_propensities"
        )[0]
        assert per[0] == 6 * per[1] and per[1] == result.customers and per[4] == 6
        assert 0 < per[2] < per[3] < 1
        ranks = s.query(
            "SELECT MIN(n) FROM (SELECT customer_id, COUNT(DISTINCT rank) AS n "
            "FROM v1_latest_propensities GROUP BY customer_id) AS t"
        )
        assert ranks == [(6,)]
        # ranked by probability: rank 1 is each customer's most likely category
        wrong = s.query(
            "SELECT COUNT(*) FROM v1_latest_propensities a JOIN v1_latest_propensities b "
            "ON a.customer_id = b.customer_id AND a.rank < b.rank "
            "WHERE a.probability < b.probability"
        )
        assert wrong == [(0,)]
        reasons = s.query("SELECT reason FROM v1_latest_propensities WHERE rank = 1 LIMIT 50")
        assert all("the chance of buying in" in r[0] for r in reasons)
        # five offers a customer, each named, with its source and reason
        offers = s.query(
            "SELECT COUNT(*), COUNT(DISTINCT customer_id), MAX(rank), COUNT(product_name), "
            "COUNT(DISTINCT source) FROM v1_latest_next_best_offers"
        )[0]
        assert offers[0] == 5 * offers[1] and offers[2] == 5 and offers[3] == offers[0]
        assert offers[1] > 0.95 * result.customers and offers[4] >= 2
        linked = s.query(
            "SELECT reason FROM v1_latest_next_best_offers WHERE source = 'co-purchase' LIMIT 20"
        )
        assert linked and all("customers who buy" in r[0] for r in linked)
        # the playbooks quote them: the segment's categories by lift, and its products
        offer = s.query("SELECT numbers FROM v1_latest_playbooks WHERE aspect = 'offer'")
        numbers = [json.loads(r[0]) for r in offer]
        assert all(len(n["categories"]) == 3 and len(n["products"]) >= 1 for n in numbers)
        named = s.query(
            "SELECT COUNT(*) FROM v1_latest_customer_playbooks p JOIN v1_latest_next_best_offers o "
            "ON p.customer_id = o.customer_id AND o.rank = 1 AND p.offer = o.product_name"
        )[0][0]
        assert named == offers[1]


def test_a_budget_beyond_the_base_is_an_error_and_writes_nothing(scored: dict) -> None:
    project = scored["project"]
    # the targeting list alone (no churn, no playbooks): the error comes after the CLV and
    # the uplift model, just before the run would be written
    asked = project.actions.model_copy(
        update={"targeting_budget": 1e12, "churn": False, "playbooks": False}
    )
    with open_store(scored["store"]) as s:
        before = s.query("SELECT COUNT(*) FROM runs")
    with pytest.raises(CustvalError, match="budget"):
        flows.score(
            project.model_copy(update={"actions": asked}),
            store_url=scored["store"],
            models_dir=scored["models"],
            prepared=scored["prepared"],
        )
    with open_store(scored["store"]) as s:
        assert s.query("SELECT COUNT(*) FROM runs") == before


def test_a_project_without_actions_writes_none(tmp_path: Path, scored: dict) -> None:
    project = scored["project"].model_copy(update={"actions": type(scored["project"].actions)()})
    store = tmp_path / "plain.duckdb"
    result = flows.score(
        project, store_url=store, models_dir=scored["models"], prepared=scored["prepared"]
    )
    assert result.actions is None
    with open_store(store) as s:
        assert s.query("SELECT COUNT(*) FROM churn_risk") == [(0,)]


def test_target_stores_a_list_within_the_budget(scored: dict, tmp_path: Path) -> None:
    config = str(scored["project"].root / "custval.toml")
    store = str(tmp_path / "t.duckdb")
    done = run(
        "target",
        "-c",
        config,
        "--budget",
        "200",
        "--store",
        store,
        "-o",
        "t.csv",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["method"] == "uplift" and 0 < summary["spent"] <= 200
    listed = pd.read_csv(tmp_path / "t.csv")
    assert listed.loc[listed.contact, "cost"].sum() == pytest.approx(summary["spent"])
    assert (listed.loc[listed.contact, "expected_profit"] > 0).all()
    with open_store(store) as s:
        kinds = s.query("SELECT kind, COUNT(*) FROM v1_runs GROUP BY kind")
        assert kinds == [("target", 1)]
        assert s.query("SELECT SUM(contact) FROM v1_latest_targeting") == [(summary["contacted"],)]


def _treatments_as(company: Path, group: str) -> None:
    path = company / "treatments.parquet"
    log = pd.read_parquet(path)
    log["group"] = group
    log.to_parquet(path)


@pytest.mark.parametrize("group", ["treatment", "control"])
def test_a_campaign_without_both_groups_is_a_clear_error(
    companies: Companies, tmp_path: Path, group: str
) -> None:
    company = companies.copy(tmp_path / "co", 600, seed=4, fmt="parquet")
    _treatments_as(company.out, group)
    store = tmp_path / "t.duckdb"
    done = run(
        "target",
        "-c",
        str(company.config_path),
        "--budget",
        "50",
        "--store",
        str(store),
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "control group" in done.stderr or "treated" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    with open_store(store) as s:  # nothing of a run
        assert s.query("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'") == [(0,)]


def test_a_budget_beyond_the_base_is_exit_2(scored: dict, tmp_path: Path) -> None:
    config = str(scored["project"].root / "custval.toml")
    done = run(
        "target",
        "-c",
        config,
        "--budget",
        "1e12",
        "--store",
        str(tmp_path / "t.duckdb"),
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "budget" in done.stderr, done.stderr


def _version(scored: dict) -> str:
    """The trained model's version (the models folder also holds the ACTIVE marker)."""
    return next(p.name for p in scored["models"].iterdir() if (p / "manifest.json").exists())


def test_the_service_answers_with_the_stored_recommendations(scored: dict, start: Any) -> None:
    version = _version(scored)
    service = start(
        ServiceSettings(models_dir=scored["models"], model=version, store=str(scored["store"]))
    )
    with open_store(scored["store"]) as s:
        cid, p_churn = s.query("SELECT customer_id, p_churn FROM v1_latest_churn_risk LIMIT 1")[0]
        playbook = s.query(
            "SELECT offer, channel, retention FROM v1_latest_customer_playbooks "
            "WHERE customer_id = ?",
            (cid,),
        )[0]
        contact = s.query("SELECT contact FROM v1_latest_targeting WHERE customer_id = ?", (cid,))
    with service.client() as c:
        r = c.get(f"/v1/customers/{cid.lower()}/recommendations")
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["churn"]["p_churn"] == pytest.approx(p_churn, abs=1e-12)
        assert len(got["churn_reasons"]) == 3
        assert (
            got["playbook"]["offer"],
            got["playbook"]["channel"],
            got["playbook"]["retention"],
        ) == playbook
        assert got["targeting"]["contact"] == contact[0][0]
        missing = c.get("/v1/customers/NOBODY/recommendations")
        assert missing.status_code == 404 and "no such customer" in missing.json()["detail"]
        assert (
            c.get(f"/v1/customers/{cid}/recommendations", headers={"Authorization": ""}).status_code
            == 401
        )


def _posted(scored: dict, ids: list[str]) -> list[dict[str, Any]]:
    """The customers as the run saw them: their RFM features and purchases at the as-of
    date."""
    from custval.features.copurchase import product_history  # noqa: F401  (the run's rules)
    from custval.flows.offers import customer_rfm

    project, prepared = scored["project"], scored["prepared"]
    feats = customer_rfm(prepared, project.as_of).features.set_index("customer_id")
    tx = prepared.tables["transactions"]
    tx = tx.filter(tx.customer_id.isin(ids) & (tx.timestamp < project.as_of))
    rows = tx.select("customer_id", "product_id", "timestamp", "amount", "is_refund").to_pandas()
    rows = rows[~rows.is_refund & rows.product_id.notna()]
    out = []
    for cid in ids:  # a loop over three customers
        mine = rows[rows.customer_id == cid]
        out.append(
            {
                "customer_id": cid,
                "features": {
                    k: (None if pd.isna(v) else float(v)) for k, v in feats.loc[cid].items()
                },
                "purchases": [
                    {"product_id": p, "day": str(t.date()), "amount": float(a)}
                    for p, t, a in zip(mine.product_id, mine.timestamp, mine.amount, strict=True)
                ],
            }
        )
    return out


def test_recommend_gives_the_stored_offers_for_the_run_customers(scored: dict, start: Any) -> None:
    version = _version(scored)
    service = start(
        ServiceSettings(
            models_dir=scored["models"], model=version, store=str(scored["store"]), batch_limit=5
        )
    )
    with open_store(scored["store"]) as s:
        ids = [
            r[0]
            for r in s.query(
                "SELECT customer_id FROM v1_latest_next_best_offers WHERE rank = 1 "
                "ORDER BY customer_id LIMIT 3"
            )
        ]
        stored = s.query(
            "SELECT customer_id, rank, product_id, score, reason FROM v1_latest_next_best_offers "
            "WHERE customer_id IN (?, ?, ?) ORDER BY customer_id, rank",
            tuple(ids),
        )
    body = {"customers": _posted(scored, ids)}
    with service.client() as c:
        info = c.get("/v1/recommend").json()
        assert info["k"] == 5 and info["as_of"] == str(scored["project"].as_of)
        r = c.post("/v1/recommend", json=body)
        assert r.status_code == 200, r.text
        got = [
            (x["customer_id"], o["rank"], o["product_id"], o["score"], o["reason"])
            for x in r.json()["recommendations"]
            for o in x["offers"]
        ]
        assert [g[:3] + g[4:] for g in got] == [s[:3] + s[4:] for s in stored]
        assert [g[3] for g in got] == pytest.approx([s[3] for s in stored], abs=1e-9)
        # fewer offers on request; a new customer with no purchase gets popular products
        newcomer = {"customer_id": "new-1", "purchases": []}
        r = c.post("/v1/recommend", json={"k": 2, "customers": [newcomer]})
        offers = r.json()["recommendations"][0]["offers"]
        assert r.status_code == 200 and len(offers) == 2
        assert {o["source"] for o in offers} == {"global popularity"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customers": []}, "customers"),
        ({"customers": [{"customer_id": "A", "features": {"frequency": "3"}}]}, "frequency"),
        ({"customers": [{"customer_id": "A", "features": {"shoe_size": 3}}]}, "shoe_size"),
        ({"customers": [{"customer_id": "A", "purchases": [{"product_id": "P1"}]}]}, "day"),
        (
            {
                "customers": [
                    {"customer_id": "A", "purchases": [{"product_id": "P1", "day": "2999-01-01"}]}
                ]
            },
            "purchases",
        ),
        ({"customers": [{"customer_id": "A"}, {"customer_id": " a "}]}, "customer_id"),
        ({"k": 0, "customers": [{"customer_id": "A"}]}, "k"),
        ({"k": "3", "customers": [{"customer_id": "A"}]}, "k"),
    ],
)
def test_recommend_refuses_bad_input_with_a_422_naming_the_field(
    scored: dict, start: Any, body: dict, field: str
) -> None:
    version = _version(scored)
    service = start(
        ServiceSettings(models_dir=scored["models"], model=version, store=str(scored["store"]))
    )
    with service.client() as c:
        r = c.post("/v1/recommend", json=body)
        assert r.status_code == 422, r.text
        assert field in r.text and r.json()["detail"]


def test_recommend_without_offers_in_the_store_is_a_404(
    tmp_path: Path, scored: dict, start: Any
) -> None:
    version = _version(scored)
    service = start(
        ServiceSettings(
            models_dir=scored["models"], model=version, store=str(tmp_path / "empty.duckdb")
        )
    )
    with service.client() as c:
        r = c.post("/v1/recommend", json={"customers": [{"customer_id": "A"}]})
        assert r.status_code == 404 and "next_best_offers" in r.json()["detail"]


def test_offers_without_a_products_column_are_a_clear_error_and_write_nothing(
    scored: dict, tmp_path: Path
) -> None:
    prepared = scored["prepared"]
    tx = prepared.tables["transactions"].drop("product_id")
    broken = dataclasses.replace(prepared, tables={**prepared.tables, "transactions": tx})
    actions = type(scored["project"].actions)(next_best_offers=3)
    project = scored["project"].model_copy(update={"actions": actions})
    store = tmp_path / "s.duckdb"
    with pytest.raises(CustvalError, match=r"\[sources\.transactions\.columns\] product_id") as e:
        flows.score(project, store_url=store, models_dir=scored["models"], prepared=broken)
    assert e.value.exit_code == 2  # what `custval score` exits with
    with open_store(store) as s:
        assert s.query("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'") == [(0,)]
        assert s.query("SELECT COUNT(*) FROM predictions") == [(0,)]


def test_propensity_with_one_category_is_a_clear_error(scored: dict) -> None:
    """Before anything is written: the scoring run's actions come before its write."""
    from custval.flows.offers import train_propensity

    prepared = scored["prepared"]
    tx = prepared.tables["transactions"].mutate(category=ibis.literal("shoes"))
    broken = dataclasses.replace(prepared, tables={**prepared.tables, "transactions": tx})
    with pytest.raises(CustvalError, match=r"one product category only \('shoes'\)") as e:
        train_propensity(scored["project"], broken)
    assert e.value.exit_code == 2 and e.value.column == "category"


def test_schemathesis_finds_no_server_error_in_recommend(
    scored: dict, start: Any, tmp_path: Path
) -> None:
    """The recommend operations fuzzed against a store that has offers (bounded, seeded):
    valid and invalid bodies; no answer may be a 5xx."""
    import os
    import subprocess
    import sys

    service = start(
        ServiceSettings(
            models_dir=scored["models"], model=_version(scored), store=str(scored["store"])
        )
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{service.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--generation-deterministic",
            "--request-timeout",
            "30",
            "--header",
            f"Authorization: Bearer {service.read}",
            "--include-path-regex",
            "recommend",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # POST and GET /v1/recommend, GET /v1/customers/{id}/recommendations
    assert "Tested: 3" in done.stdout, done.stdout[-3000:]


def test_the_snapshot_answers_as_the_store_does(scored: dict, tmp_path: Path) -> None:
    from custval.store.snapshot import CustomerSnapshot

    with open_store(scored["store"]) as s:
        snap = CustomerSnapshot.load(s, tmp_path / "cache")
        assert snap is not None
        ids = [r[0] for r in s.query("SELECT customer_id FROM v1_latest_predictions")]
        # the first, the last and a spread in between; those with a targeting row among them
        chosen = [*sorted(ids)[:: max(1, len(ids) // 40)], max(ids)]
        chosen += [r[0] for r in s.query("SELECT customer_id FROM v1_latest_targeting LIMIT 5")]
        for cid in chosen:  # a loop over about fifty customers
            # as the service sends them (NaN, e.g. a P(alive) without purchases, is null)
            got, want = snap.recommendations(cid), s.recommendations(cid)
            assert to_json(got, inf_nan_mode="null") == to_json(want, inf_nan_mode="null"), cid
        assert snap.recommendations("NOBODY") is None and s.recommendations("NOBODY") is None
        # made once per run: loading again reads the same folder
        again = CustomerSnapshot.load(s, tmp_path / "cache")
        assert again is not None and again.folder == snap.folder
        assert [p.name for p in (tmp_path / "cache").iterdir()] == [snap.folder.name]


def test_the_init_template_shows_actions_that_load() -> None:
    import tomllib

    from custval.cli.template import TEMPLATE
    from custval.config import ActionOptions, MonitorOptions

    def block(name: str) -> dict:
        # one commented table, up to the blank line that ends it
        start = TEMPLATE.index(f"# [{name}]")
        text = TEMPLATE[start:].split("\n\n")[0]
        lines = [line.removeprefix("# ") for line in text.splitlines()]
        return tomllib.loads("\n".join(lines))[name]

    opts = ActionOptions(**block("actions"))
    assert opts.any and opts.next_best_offers == 5 and opts.targeting_budget == 1000.0
    # the [monitor] block shows the defaults, so uncommenting it changes nothing
    assert MonitorOptions(**block("monitor")) == MonitorOptions()


def test_without_cancellations_churn_is_a_lapse_learnt_from_plain_features(scored: dict) -> None:
    from custval.flows.churn import BTYD_MEANINGS, score_churn, train_churn

    prepared = scored["prepared"]
    tables = {k: v for k, v in prepared.tables.items() if k != "subscriptions"}
    no_subscriptions = dataclasses.replace(prepared, tables=tables)
    fit = train_churn(scored["project"], no_subscriptions, candidates=("logistic",), folds=3)
    assert fit.label_kind == "lapse" and 0.05 < fit.churned_share < 0.95
    assert not set(BTYD_MEANINGS) & set(fit.clf.schema_.columns)
    risk, why, frame = score_churn(fit, scored["project"], no_subscriptions)
    # every customer is scored (not only subscribers), three reasons each
    assert risk.num_rows == scored["result"].customers == len(frame)
    assert set(risk.column("label_kind").to_pylist()) == {"lapse"}
    assert why.num_rows == 3 * risk.num_rows


def test_a_campaign_too_small_to_learn_from_falls_back_to_the_labelled_heuristic(
    companies: Companies, tmp_path: Path
) -> None:
    from custval.flows.targeting import target

    company = companies.copy(tmp_path / "co", 600, seed=0, fmt="parquet")
    project = load_project(company.config_path)
    prepared = flows.prepare(project)
    ids = prepared.tables["customers"].customer_id.to_pandas().astype(str)
    clv = pd.Series(100.0, index=ids.to_numpy())
    p_churn = pd.Series(0.3, index=ids.to_numpy())
    # with churn risk at hand: the heuristic, saying why uplift was not learnt
    found = target(project, prepared, clv=clv, p_churn=p_churn, budget=50.0, cost=5.0)
    assert found.targets.method == "heuristic" and found.uplift is None
    assert found.targets.note.startswith("uplift not learnt from the campaign log: the control")
    assert found.targets.spent <= 50.0
    # custval target learns churn risk for it, and says the same
    store = tmp_path / "t.duckdb"
    done = run(
        "target",
        "-c",
        str(company.config_path),
        "--budget",
        "50",
        "--store",
        str(store),
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["method"] == "heuristic" and 0 < summary["spent"] <= 50
    assert "uplift not learnt from the campaign log" in summary["note"]
