"""Benchmark of the next best offer on the generated company: the product's ranker against the
baselines practitioners use, in one run, on a time-based holdout; and its speed at 1M customers.

Data: ``custval synth`` with products (a catalogue of 6 categories x 20 products, planted
co-purchase partners, repurchase habits and segment popularity), as Parquet in
``bench/.data/nbo-company-<n>-<seed>``, made once. Everything goes through the project: the
sources are validated, cleaned and linked by ``custval.flows.preparation.prepare``.

Holdout: the last 13 weeks of the data. With ``end`` the project's as-of date (the day after
the data end), the offers are made at ``as_of = end - 13 weeks`` and judged on the products
bought in [as_of, end).

The ranker is the product's own code path, as a scoring run makes it:
``custval.flows.offers.train_offers`` and ``offer_batches`` on the project with its as-of
date moved to ``as_of``. It learns one horizon earlier (candidates at ``t0 = as_of - 13
weeks``, labelled by the purchases in [t0, as_of)) from repurchase, item-to-item co-purchase
and global popularity, with the customers' RFM features (``custval.flows.offers
.CUSTOMER_FEATURES``). It has no segment source: the product has none for the ranker (the
reason is in ``custval.flows.offers``' docstring).

The baselines are ranked from the candidates at ``as_of`` made WITH the CRM's
``segment_label`` as segments (known for about 30% of the customers; the others fall back to
global popularity), since segment popularity is one of them.

Contenders, each giving 10 products per customer, MAP@10 and recall@10 over the customers
who bought in the holdout (the H&M competition's definition; ``custval.models.nbo``):

- global popularity: the 10 products bought by the most customers in the last 28 days;
- segment popularity: the same within the customer's CRM segment (global without one);
- item-to-item alone: the co-purchase partners of the customer's recent products by their
  recency-weighted cosine; and the same topped up with global popularity to 10;
- ALS alone (``implicit``, when installed): the 10 best products of the factorisation of the
  purchase history; and the same topped up with global popularity;
- repurchase alone, for information: the customer's most often bought products;
- the ranker: ``NextBestOffer`` (LightGBM lambdarank) as ``custval.flows.offers`` trains and
  applies it.

Acceptance (issue 17): the ranker's MAP@10 at least 1.3x segment popularity's and above ALS's
and item-to-item's (the better of each one's two variants).

Scale (``--scale-n``, default 1,000,000): two child processes, so that each one's peak memory
(``ru_maxrss``) is its own: ``train`` prepares the project and runs ``train_offers`` (customer
features, candidates and labels at t0, then the fit: the training time); ``infer`` prepares
the project again and makes the offers at ``as_of`` for every customer with
``offer_batches`` (candidate sources, then candidates, ranking and reasons in parts of
200,000 customers), written part by part. Target: candidates plus ranking under 120 s and the
process under 4 GB, with DuckDB capped at 1500MB (``CUSTVAL_MEMORY_LIMIT``, which custval's
working connection reads; beyond it DuckDB spills to disk). The preparation (reading and
cleaning the sources) and the customer features (``customer_rfm``) are timed apart: a scoring
run has them anyway. The load average is printed with the figures: the machine is shared.

Usage::

    python bench/nbo.py                      # 200k quality run, 1M scale run
    python bench/nbo.py -n 50000 --scale-n 0 # a quicker look
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
HORIZON_DAYS = 91
K = 10
RATIO_TARGET = 1.3
SECONDS_TARGET = 120.0
MEMORY_TARGET_MIB = 4096
DUCKDB_LIMIT = os.environ.get("CUSTVAL_MEMORY_LIMIT", "1500MB")


def ensure_data(n: int, seed: int) -> Path:
    folder = HERE / ".data" / f"nbo-company-{n}-{seed}"
    if not (folder / "products.parquet").exists():
        from custval.data.synth import generate

        print(f"generating {n:,} customers as Parquet in {folder} ...", flush=True)
        generate(n, folder, seed=seed, fmt="parquet")
    return folder


def load(data: Path) -> dict[str, Any]:
    """The prepared project (its tables with the cleaned transactions cached, the columns the
    offers read), the products, the CRM segments and the project's as-of date."""
    from custval.config import load_project
    from custval.flows.preparation import prepare

    project = load_project(data / "custval.toml")
    # the sources the offers read; the others (web, usage, tickets, subscriptions, the
    # campaign) would only cost preparation time and memory
    kinds = {"transactions", "customers", "products", "id_map"}
    keep = {k: v for k, v in project.sources.items() if v.kind in kinds}
    project = project.model_copy(update={"sources": keep})
    prepared = prepare(project)
    tables = prepared.tables
    cols = ["customer_id", "order_id", "timestamp", "amount", "is_refund", "category"]
    tx = tables["transactions"].select(*cols, "product_id").cache()
    crm = tables["customers"]
    segments = crm.select("customer_id", segment=crm.segment_label).filter(
        crm.segment_label.notnull()
    )
    return {
        "project": project,
        # the product's flow reads the same restricted, cached tables as the baselines
        "prepared": dataclasses.replace(prepared, tables={**tables, "transactions": tx}),
        "tx": tx,
        "products": tables["products"],
        "segments": segments,
        "end": project.as_of,
    }


def at_date(env: dict[str, Any], as_of: date) -> Any:
    """The project as a scoring run at ``as_of`` sees it."""
    return env["project"].model_copy(update={"as_of": as_of})


def baseline_candidates(env: dict[str, Any], at: date, customers: Any) -> tuple[Any, pd.DataFrame]:
    """The candidates the baselines rank: the product's sources plus segment popularity by
    the CRM segments."""
    from custval.features.copurchase import candidate_batches, candidate_sources

    sources = candidate_sources(env["tx"], at, segments=env["segments"], products=env["products"])
    frame = pd.concat(list(candidate_batches(sources, customers)), ignore_index=True)
    return sources, frame


def proposed_without_segments(cand: pd.DataFrame) -> np.ndarray:
    """The rows of the baselines' candidates that the product's sources propose (repurchase,
    co-purchase, global popularity; ``candidate_batches``' thresholds): the product's own
    candidates, whose features do not depend on the segments."""
    from custval.features.copurchase import candidate_batches

    defaults = inspect.signature(candidate_batches).parameters
    n_popular = defaults["n_popular"].default
    min_link = defaults["min_link_score"].default
    glob = cand["glob_rank"].astype("float64").to_numpy()
    return (
        (cand["times_bought"].astype("float64").to_numpy() > 0)
        | (cand["cop_recent"].astype("float64").to_numpy() >= min_link)
        | (glob <= n_popular)
    )


def ranked(frame: pd.DataFrame, score: np.ndarray, keep: np.ndarray | None = None) -> pd.DataFrame:
    """The 10 best rows per customer by ``score`` (among ``keep``), with their rank."""
    from custval.models.nbo import top_k

    if keep is not None:
        frame, score = frame[keep], score[keep]
    rows, rank = top_k(frame["customer_id"], score, K)
    out = frame.iloc[rows][["customer_id", "product_id"]].reset_index(drop=True)
    return out.assign(rank=rank)


def topped_up(rec: pd.DataFrame, popular: list[str], customers: pd.Series) -> pd.DataFrame:
    """``rec`` with each customer's list filled to 10 from ``popular`` (in its order), for
    every customer of ``customers``."""
    have = rec.groupby("customer_id").size().reindex(customers, fill_value=0)
    rows = []
    for pos, pid in enumerate(popular[:K]):  # a loop over the 10 popular products
        rows.append(pd.DataFrame({"customer_id": customers, "product_id": pid, "order": pos}))
    extra = pd.concat(rows, ignore_index=True)
    extra = extra.merge(rec[["customer_id", "product_id"]], how="left", indicator=True)
    extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge")
    extra = extra.sort_values(["customer_id", "order"], kind="stable")
    extra["rank"] = extra.groupby("customer_id").cumcount() + 1
    extra["rank"] += extra["customer_id"].map(have).to_numpy()
    extra = extra[extra["rank"] <= K].drop(columns="order")
    return pd.concat([rec, extra], ignore_index=True)


def als_offers(history: pd.DataFrame, customers: pd.Series, threads: int) -> pd.DataFrame:
    from custval.models.nbo import ImplicitAls

    als = ImplicitAls(factors=64, iterations=15, regularization=0.05, alpha=10.0, threads=threads)
    out = als.fit(history).recommend(customers, n=K)
    return out.rename(columns={"als_rank": "rank"})[["customer_id", "product_id", "rank"]]


def holdout_recall(cand: pd.DataFrame, actual: pd.DataFrame) -> float:
    """The ceiling of any ranking of ``cand``: the share of its customers' purchases in the
    holdout that are among their candidates."""
    pairs = cand[["customer_id", "product_id"]].astype(str)
    theirs = actual[actual.customer_id.isin(pairs.customer_id.unique())].drop_duplicates()
    return len(theirs.merge(pairs, how="inner")) / max(len(theirs), 1)


def quality(data: Path, threads: int) -> dict[str, Any]:
    from custval.features.copurchase import product_purchases
    from custval.flows.offers import customer_rfm, offer_batches, train_offers
    from custval.models.nbo import ranking_metrics

    t = time.perf_counter()
    env = load(data)
    print(f"prepared in {time.perf_counter() - t:.1f} s", flush=True)
    end = env["end"]
    as_of = end - timedelta(days=HORIZON_DAYS)
    t0 = as_of - timedelta(days=HORIZON_DAYS)
    tx, prepared, project_at = env["tx"], env["prepared"], at_date(env, as_of)
    now = customer_rfm(prepared, as_of)
    actual = product_purchases(tx, as_of, end).to_pandas()

    # the ranker, exactly as a scoring run at as_of makes it (no segment source)
    t = time.perf_counter()
    model = train_offers(project_at, prepared, k=K, horizon_days=HORIZON_DAYS, threads=threads)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    parts = offer_batches(model, project_at, prepared, customers=now)
    rec = pd.concat(list(parts), ignore_index=True)
    rank_s = time.perf_counter() - t

    # the baselines rank the candidates made with the CRM segments
    sources1, cand1 = baseline_candidates(env, as_of, now.spine)
    # offer_batches keeps its candidates to itself: the product's are the baselines' rows
    # that its own sources propose
    own = cand1[proposed_without_segments(cand1)]
    contenders: dict[str, pd.DataFrame] = {}
    glob = -cand1["glob_rank"].astype("float64").fillna(1e9).to_numpy()
    contenders["global popularity"] = ranked(cand1, glob)
    popular = sources1.popular.order_by("rank").limit(K).to_pandas()["product_id"].tolist()
    seg = cand1["seg_rank"].astype("float64").to_numpy()
    contenders["segment popularity"] = ranked(cand1, np.where(np.isnan(seg), glob - 1e3, -seg))
    cop = cand1["cop_recent"].astype("float64").to_numpy()
    i2i = ranked(cand1, cop, cop > 0)
    customers = pd.Series(cand1["customer_id"].unique()).astype(str)
    contenders["item-to-item alone"] = i2i
    contenders["item-to-item + popularity"] = topped_up(i2i, popular, customers)
    # ImplicitAls reports a missing implicit as a CustvalError at fit: ask first
    if importlib.util.find_spec("implicit") is not None:
        history = sources1.history.to_pandas()
        als = als_offers(history, customers, threads)
        contenders["ALS alone"] = als
        contenders["ALS + popularity"] = topped_up(als, popular, customers)
    else:
        print("implicit is not installed: no ALS", flush=True)
    times = cand1["times_bought"].astype("float64").to_numpy()
    contenders["repurchase alone (info)"] = ranked(cand1, times - 1e-6 * glob, times > 0)
    contenders["ranker (NextBestOffer)"] = rec
    feats0 = customer_rfm(prepared, t0).features
    propensity = propensity_board(env, t0, as_of, feats0, now.features, threads)
    rows = []
    for name, offers in contenders.items():  # a loop over the contenders
        m = ranking_metrics(offers, actual, K)
        rows.append({"contender": name, "map@10": m["map@10"], "recall@10": m["recall@10"]})
    board = pd.DataFrame(rows)
    return {
        "board": board,
        "customers": int(m["customers"]),
        "offered": int(rec.customer_id.nunique()),
        "candidates_per_customer": float(len(own) / max(own.customer_id.nunique(), 1)),
        "baseline_candidates_per_customer": float(len(cand1) / cand1.customer_id.nunique()),
        "candidate_recall": float(model.candidate_recall_),
        "holdout_recall": holdout_recall(own, actual),
        "baseline_holdout_recall": holdout_recall(cand1, actual),
        "train_s": train_s,
        "fit_s": float(model.fit_seconds_),
        "rank_s": rank_s,
        "best_iteration": model.best_iteration_,
        "train_customers": model.n_train_customers_,
        "dates": {"t0": str(t0), "as_of": str(as_of), "end": str(end)},
        "example": rec.drop(columns="category").head(10),
        "propensity": propensity,
    }


def propensity_board(
    env: dict[str, Any],
    t0: date,
    as_of: date,
    feats0: pd.DataFrame,
    feats1: pd.DataFrame,
    threads: int,
) -> dict[str, Any]:
    """For information: category propensity on the same holdout, the stacked design against
    one model per category (``CategoryPropensity`` chooses by mean log-loss)."""
    from custval.features.copurchase import category_history, category_purchases
    from custval.models.propensity import CategoryPropensity

    tx, end = env["tx"], env["end"]

    def period(at: date, stop: date, feats: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
        history = category_history(tx, at).to_pandas()
        return feats, history, category_purchases(tx, at, stop).to_pandas()

    t = time.perf_counter()
    model = CategoryPropensity(threads=threads).fit(
        *period(as_of, end, feats1), earlier=period(t0, as_of, feats0)
    )
    return {
        "board": model.leaderboard_.drop(columns=["error"]),
        "chosen": model.chosen_,
        "seconds": time.perf_counter() - t,
    }


# ---- scale: child processes ------------------------------------------------------------------


def child_train(data: Path, model_path: Path, threads: int) -> dict[str, Any]:
    from custval.flows.offers import train_offers

    out: dict[str, Any] = {}
    t = time.perf_counter()
    env = load(data)
    out["prepare_s"] = time.perf_counter() - t
    as_of = env["end"] - timedelta(days=HORIZON_DAYS)
    t = time.perf_counter()
    model = train_offers(
        at_date(env, as_of), env["prepared"], k=K, horizon_days=HORIZON_DAYS, threads=threads
    )
    out["train_offers_s"] = time.perf_counter() - t
    # train_offers = the training data (customer features, candidates, labels) + the fit
    out["fit_s"] = float(model.fit_seconds_)
    out["training_data_s"] = out["train_offers_s"] - out["fit_s"]
    model_path.write_bytes(model.dumps())
    out["train_customers"] = model.n_train_customers_
    return out


def child_infer(data: Path, model_path: Path, out_path: Path, threads: int) -> dict[str, Any]:
    from custval.flows.offers import customer_rfm, offer_batches
    from custval.models.nbo import NextBestOffer

    out: dict[str, Any] = {}
    t = time.perf_counter()
    env = load(data)
    out["prepare_s"] = time.perf_counter() - t
    model = NextBestOffer.loads(model_path.read_bytes()).set_params(threads=threads)
    as_of = env["end"] - timedelta(days=HORIZON_DAYS)
    prepared, project_at = env["prepared"], at_date(env, as_of)
    t = time.perf_counter()
    now = customer_rfm(prepared, as_of)
    out["customer_features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    n_offers, customers, write_s = 0, 0, 0.0
    writer: pq.ParquetWriter | None = None
    # candidate sources, then candidates, ranking and reasons part by part
    for part in offer_batches(model, project_at, prepared, customers=now):
        w = time.perf_counter()
        schema = writer.schema if writer is not None else None
        offers = pa.Table.from_pandas(part, schema=schema, preserve_index=False)
        # the offers go out part by part, as a run's rows go to the store
        writer = writer or pq.ParquetWriter(out_path, offers.schema)
        writer.write_table(offers)
        n_offers += offers.num_rows
        customers += len(pc.unique(offers["customer_id"]))
        write_s += time.perf_counter() - w
    if writer is not None:
        writer.close()
    out["candidates_plus_ranking_s"] = time.perf_counter() - t
    out["of_which_writing_s"] = write_s
    out["customers_offered"] = customers
    out["offers"] = n_offers
    return out


def run_child(args: list[str], work: Path) -> dict[str, Any]:
    """``bench/nbo.py --child ...`` in a child process: its JSON report, its wall time and its
    own peak RSS (``ru_maxrss`` from ``wait4``)."""
    start = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    out, err = work / f"{args[1]}.out", work / f"{args[1]}.err"
    # DuckDB's cap (custval's CUSTVAL_MEMORY_LIMIT, 3GB by default): beyond it DuckDB spills
    # to disk, so that the engine and Python together stay under the 4 GB target
    env = {**os.environ, "CUSTVAL_MEMORY_LIMIT": DUCKDB_LIMIT}
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.read_text()}\n{err.read_text()}")
    report = json.loads(out.read_text().strip().splitlines()[-1])
    report["wall_s"] = wall
    report["peak_mib_wait4"] = usage.ru_maxrss / 1024
    return report


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200_000, help="customers of the quality run")
    parser.add_argument("--scale-n", type=int, default=1_000_000, help="0: no scale run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["train", "infer"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import resource

        if args.child == "train":
            report = child_train(args.data, args.model, args.threads)
        else:
            report = child_infer(args.data, args.model, args.out, args.threads)
        report["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report["load_average"] = load_average()
        print(json.dumps(report))
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    lines = [f"bench/nbo.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores"]
    ok = True
    if args.n:
        data = ensure_data(args.n, args.seed)
        print(f"quality run on {args.n:,} customers (load {load_average()})", flush=True)
        q = quality(data, args.threads)
        board = q["board"]
        get = dict(zip(board.contender, board["map@10"], strict=True))
        ranker = get["ranker (NextBestOffer)"]
        seg = get["segment popularity"]
        i2i = max(get["item-to-item alone"], get["item-to-item + popularity"])
        als = max(get.get("ALS alone", 0.0), get.get("ALS + popularity", 0.0))
        board["x segment"] = board["map@10"] / seg
        lines += [
            "",
            f"Quality: {args.n:,} generated customers (seed {args.seed}); offers at "
            f"{q['dates']['as_of']} judged on the purchases up to {q['dates']['end']} "
            f"(13 weeks), trained at {q['dates']['t0']}",
            "ranker: custval.flows.offers (train_offers, offer_batches; candidates from "
            "repurchase, co-purchase and global popularity, no segment source); baselines: "
            "the same candidates plus segment popularity by the CRM segment_label",
            f"customers who bought in the holdout: {q['customers']:,}; offered: "
            f"{q['offered']:,}; candidates per customer: {q['candidates_per_customer']:.1f} "
            f"(the baselines': {q['baseline_candidates_per_customer']:.1f})",
            "share of the offered customers' purchases that are among the ranker's candidates: "
            f"{q['candidate_recall']:.3f} in training (model.candidate_recall_), "
            f"{q['holdout_recall']:.3f} in the holdout (offer_batches does not expose its "
            "candidates: the baselines' candidates that repurchase, co-purchase or global "
            "popularity propose, the same rows; with the segment-popular ones "
            f"{q['baseline_holdout_recall']:.3f})",
            board.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
            f"ranker: train_offers {q['train_s']:.1f} s (customer features, candidates and "
            f"labels at t0, then the fit: {q['fit_s']:.1f} s on {q['train_customers']:,} "
            f"customers, {q['best_iteration']} trees); offer_batches for all (candidates at "
            f"as_of and ranking) in {q['rank_s']:.1f} s",
            f"ranker / segment popularity: {ranker / seg:.2f}x (target >= {RATIO_TARGET}x); "
            f"above item-to-item ({i2i:.4f}): {ranker > i2i}; above ALS ({als:.4f}): "
            f"{ranker > als if als else 'no ALS'}",
            "example offers:",
            q["example"].to_string(index=False),
            "",
            "Category propensity on the same holdout (for information; trained at t0, judged "
            "on the holdout, chosen by mean log-loss over the categories):",
            q["propensity"]["board"].to_string(index=False, float_format=lambda v: f"{v:.4f}"),
            f"chosen: {q['propensity']['chosen']} ({q['propensity']['seconds']:.1f} s with the "
            "refit)",
            f"load average after the quality run: {load_average()}",
        ]
        ok &= ranker >= RATIO_TARGET * seg and ranker > i2i and (not als or ranker > als)
        print("\n".join(lines), flush=True)
    if args.scale_n:
        data = ensure_data(args.scale_n, args.seed)
        work = HERE / ".data" / f"nbo-run-{args.scale_n}"
        work.mkdir(parents=True, exist_ok=True)
        common = ["--data", str(data), "--model", str(work / "model.json")]
        common += ["--threads", str(args.threads)]
        print(f"scale run on {args.scale_n:,} customers: training ...", flush=True)
        train = run_child(["--child", "train", *common], work)
        print(f"training done ({train['train_offers_s']:.1f} s); inference ...", flush=True)
        infer = run_child(
            ["--child", "infer", *common, "--out", str(work / "offers.parquet")], work
        )
        seconds, peak = infer["candidates_plus_ranking_s"], infer["peak_mib_wait4"]
        lines += [
            "",
            f"Scale: {args.scale_n:,} generated customers, {args.threads} threads, DuckDB "
            f"memory limit {DUCKDB_LIMIT} (CUSTVAL_MEMORY_LIMIT)",
            "training (child process): " + json.dumps({k: _r(v) for k, v in train.items()}),
            "inference (child process): " + json.dumps({k: _r(v) for k, v in infer.items()}),
            f"candidates + ranking at the as-of date: {seconds:.1f} s (target < "
            f"{SECONDS_TARGET:.0f} s); inference process peak {peak:,.0f} MiB (target < "
            f"{MEMORY_TARGET_MIB} MiB)",
        ]
        ok &= seconds < SECONDS_TARGET and peak < MEMORY_TARGET_MIB
    lines.append(f"acceptance: {'PASS' if ok else 'FAIL'}")
    text = "\n".join(lines) + "\n"
    print(text)
    results = HERE / "results" / "nbo.txt"
    results.write_text(text)
    print(f"written to {results}")
    return 0 if ok else 1


def _r(v: Any) -> Any:
    return round(v, 2) if isinstance(v, float) else v


if __name__ == "__main__":
    sys.exit(main())
