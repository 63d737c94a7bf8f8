"""Category propensity and next best offers for a project, as a scoring run makes them
(``[actions] propensity`` and ``next_best_offers``) and as ``bench/nbo.py`` measures them.

Both learn one horizon back and predict ahead, as churn does (:mod:`custval.flows.churn`):

- the ranker (:class:`custval.models.nbo.NextBestOffer`): candidates at c = as_of − horizon
  (:func:`custval.features.copurchase.candidate_sources`: repurchase, item-to-item
  co-purchase, global popularity), labelled by the products bought in [c, as_of); then the
  candidates at the as-of date are ranked, part by part, into the top k offers per customer;
- propensity (:class:`custval.models.propensity.CategoryPropensity`): trained on the categories
  bought in [c, as_of) after the history at c, its two designs compared one horizon earlier
  (history at c − horizon, purchases in [c − horizon, c)); then every customer's chance of
  buying in each category within the horizon after the as-of date.

Segment popularity is not a candidate source here: a scoring run's segments are known at the
as-of date only, and a segment drawn from [c, as_of) would leak the ranker's labels into its
training. The customers' features are their RFM columns (:data:`CUSTOMER_FEATURES`), computed
at each date.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache, partial

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from custval.config import Project
from custval.data import engine
from custval.errors import CustvalError
from custval.features.build import build_features
from custval.features.copurchase import (
    CandidateSources,
    candidate_batches,
    candidate_sources,
    candidates,
    category_history,
    category_purchases,
    product_history,
    product_purchases,
    require_products,
)
from custval.flows.preparation import Prepared
from custval.models.nbo import NextBestOffer
from custval.models.propensity import CategoryPropensity

__all__ = [
    "CUSTOMER_FEATURES",
    "OFFER_FILES",
    "Customers",
    "OfferFit",
    "ServedOffers",
    "customer_rfm",
    "offer_batches",
    "offer_files",
    "offer_sources",
    "propensity_rows",
    "score_offers",
    "train_offers",
    "train_propensity",
]

#: the customer features of the ranker and of propensity (the RFM group's columns)
CUSTOMER_FEATURES = (
    "frequency",
    "recency_days",
    "T",
    "monetary_value",
    "orders",
    "revenue",
    "avg_order_value",
)
#: at most this many categories per customer are kept in the store, most likely first
MAX_CATEGORIES = 10
#: DuckDB's memory cap while candidates are made and ranked: the ranker's frames (a part of
#: 200,000 customers' candidates, a few million rows) and LightGBM sit beside the engine, and
#: at the working connection's default cap of 3GB a million customers peaked at 5.5 GB;
#: at 1500MB (DuckDB spills the rest) the step stays under 4 GB (bench/nbo.py)
OFFER_MEMORY_LIMIT_MB = 1500


@dataclass
class OfferFit:
    """What the offers of a scoring run rest on."""

    nbo: NextBestOffer | None = None
    propensity: CategoryPropensity | None = None
    #: what the service needs of the offers (:data:`OFFER_FILES`)
    files: dict[str, bytes] = field(default_factory=dict)


def _transactions(project: Project, prepared: Prepared) -> ir.Table:
    """The cleaned transactions, with a clear error when a product is not named."""
    tx = prepared.tables.get("transactions")
    if tx is None:
        raise CustvalError(
            "offers and propensity need purchases, and the project has no transactions source",
            hint="Add a source of kind transactions, or turn propensity and next_best_offers off",
        )
    name = next((n for n, s in project.sources.items() if s.kind == "transactions"), "tx")
    require_products(tx, source=name)
    return tx


@dataclass
class Customers:
    """The customers known at a date: their ids (an Ibis table), their RFM features (pandas)
    and what each feature means (for the reasons)."""

    spine: ir.Table
    features: pd.DataFrame
    catalogue: dict[str, str]


def customer_rfm(prepared: Prepared, at: date) -> Customers:
    """The customers known at ``at`` and their :data:`CUSTOMER_FEATURES`."""
    ft = build_features(
        prepared.tables, at, groups=["rfm"], one_row_per_order=prepared.one_row_per_order
    )
    cols = [c for c in CUSTOMER_FEATURES if c in ft.table.columns]
    feats = _ordered(ft.table.select("customer_id", *cols).to_pyarrow().to_pandas())
    meaning = {f.name: f.description for f in ft.catalogue if f.name in cols}
    return Customers(ft.table.select("customer_id"), feats, meaning)


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by its key columns: the engine returns rows in any order, and the
    models learn the same from the same rows only in the same order."""
    keys = [c for c in ("customer_id", "product_id", "category") if c in frame.columns]
    return frame.sort_values(keys, kind="stable", ignore_index=True)


def _sources(prepared: Prepared, tx: ir.Table, at: date) -> CandidateSources:
    return candidate_sources(tx, at, products=prepared.tables.get("products"))


def train_offers(
    project: Project,
    prepared: Prepared,
    *,
    k: int = 10,
    horizon_days: int = 91,
    threads: int = 2,
    rfm: Callable[[date], Customers] | None = None,
) -> NextBestOffer:
    """The ranker, trained on the candidates at as_of − ``horizon_days`` and the products bought
    from then to the as-of date. ``rfm``: the customers at a date (:func:`customer_rfm`), when
    the caller keeps them."""
    tx = _transactions(project, prepared)
    cut = project.as_of - timedelta(days=horizon_days)
    known = (rfm or partial(customer_rfm, prepared))(cut)
    sources = _sources(prepared, tx, cut)
    labels = product_purchases(tx, cut, project.as_of)
    # the ranker learns from the customers with a bought candidate only: the candidates of
    # those who bought nothing in the horizon would be made and dropped (two thirds of a
    # million customers' candidates, and the step's peak memory)
    buyers = known.spine.semi_join(labels.select("customer_id").distinct(), "customer_id")
    with engine.capped_memory(prepared.con, OFFER_MEMORY_LIMIT_MB):
        cand = _ordered(pd.concat(list(candidate_batches(sources, buyers)), ignore_index=True))
    bought = _ordered(labels.to_pandas())
    model = NextBestOffer(k=k, horizon_days=horizon_days, threads=threads)
    return model.fit(cand, bought, known.features)


def offer_batches(
    model: NextBestOffer,
    project: Project,
    prepared: Prepared,
    *,
    at: date | None = None,
    customers: Customers | None = None,
    sources: CandidateSources | None = None,
    catalogue: pd.DataFrame | None = None,
) -> Iterator[pd.DataFrame]:
    """The offers at ``at`` (default: the as-of date), part by part: the store's
    ``next_best_offers`` columns (customer_id, rank, product_id, product_name, category,
    score, source, reason). ``customers``: their :func:`customer_rfm` at ``at``, and
    ``sources`` the candidate sources there (:func:`offer_sources`) and their ``catalogue``
    (product_id, name, category), if known."""
    at = at or project.as_of
    known = customers or customer_rfm(prepared, at)
    sources = sources or offer_sources(project, prepared, at)
    catalogue = _catalogue(prepared, sources) if catalogue is None else catalogue
    with engine.capped_memory(prepared.con, OFFER_MEMORY_LIMIT_MB):
        for cand in candidate_batches(sources, known.spine):  # a loop over parts of customers
            offers = model.recommend(cand, known.features, catalogue)
            yield _described(offers, catalogue)


def offer_sources(project: Project, prepared: Prepared, at: date) -> CandidateSources:
    """The candidate sources of the offers at ``at`` (computed once, cached)."""
    return _sources(prepared, _transactions(project, prepared), at)


def _catalogue(prepared: Prepared, sources: CandidateSources) -> pd.DataFrame:
    """product_id, name and category of every product (the name is the id when unknown)."""
    known = sources.catalogue.select("product_id", "category").to_pandas()
    products = prepared.tables.get("products")
    if products is not None and "name" in products.columns:
        names = products.select("product_id", "name").distinct(on="product_id").to_pandas()
        known = known.merge(names, on="product_id", how="left")
    else:
        known["name"] = None
    known["name"] = known["name"].fillna(known["product_id"]).astype(str)
    return known.astype({"product_id": str})


def _described(offers: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    by_id = catalogue.set_index("product_id")
    ids = offers["product_id"].astype(str)
    return pd.DataFrame(
        {
            "customer_id": offers["customer_id"].astype(str).to_numpy(),
            "rank": offers["rank"].to_numpy(np.int32),
            "product_id": ids.to_numpy(),
            "product_name": ids.map(by_id["name"]).fillna(ids).to_numpy(),
            "category": ids.map(by_id["category"]).to_numpy(),
            "score": offers["score"].to_numpy(np.float64),
            "source": offers["source"].astype(str).to_numpy(),
            "reason": offers["reason"].astype(str).to_numpy(),
        }
    )


def _period(
    tx: ir.Table, feats: pd.DataFrame, at: date, stop: date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    history = _ordered(category_history(tx, at).to_pandas())
    return feats, history, _ordered(category_purchases(tx, at, stop).to_pandas())


def train_propensity(
    project: Project,
    prepared: Prepared,
    *,
    horizon_days: int = 91,
    threads: int = 2,
    rfm: Callable[[date], Customers] | None = None,
) -> CategoryPropensity:
    """Category propensity trained at as_of − ``horizon_days``, its design chosen one horizon
    earlier (:mod:`custval.flows.offers`). ``rfm`` as in :func:`train_offers`."""
    tx = _transactions(project, prepared)
    if "category" not in tx.columns:
        raise CustvalError(
            "propensity is per product category, and the transactions have no category column",
            column="category",
            hint='Map one with [sources.<transactions>.columns] category = "<your column>"',
        )
    h = timedelta(days=horizon_days)
    cut, before = project.as_of - h, project.as_of - 2 * h
    at = rfm or partial(customer_rfm, prepared)
    now = _period(tx, at(cut).features, cut, project.as_of)
    earlier = _period(tx, at(before).features, before, cut)
    return CategoryPropensity(threads=threads).fit(*now, earlier=earlier)


def propensity_rows(
    model: CategoryPropensity, project: Project, prepared: Prepared, customers: Customers
) -> pd.DataFrame:
    """The store's ``propensities`` rows at the as-of date: per customer the
    ``MAX_CATEGORIES`` most likely categories with rank, probability and the first reason."""
    tx = _transactions(project, prepared)
    history = _ordered(category_history(tx, project.as_of).to_pandas())
    found = model.reasons(customers.features, history, top_k=1, catalogue=customers.catalogue)
    found = found.sort_values(
        ["customer_id", "probability"], ascending=[True, False], kind="stable"
    )
    found["rank"] = found.groupby("customer_id", sort=False).cumcount().astype(np.int32) + 1
    found = found[found["rank"] <= MAX_CATEGORIES]
    reason = found.get("reason_1", pd.Series("", index=found.index)).fillna("")
    return pd.DataFrame(
        {
            "customer_id": found["customer_id"].astype(str).to_numpy(),
            "category": found["category"].astype(str).to_numpy(),
            "rank": found["rank"].to_numpy(np.int32),
            "probability": found["probability"].to_numpy(np.float64),
            "reason": reason.astype(str).to_numpy(),
        }
    )


def score_offers(
    project: Project,
    prepared: Prepared,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, pa.Table], dict[str, pd.DataFrame], OfferFit]:
    """The ``propensities`` and ``next_best_offers`` tables the project asks for, the same
    rows as pandas frames (for the playbooks), and the models."""
    say = progress or (lambda _stage: None)
    opts = project.actions
    fit = OfferFit()
    tables: dict[str, pa.Table] = {}
    frames: dict[str, pd.DataFrame] = {}
    # the customers at a date, computed once: both models learn at the same cutoff
    rfm = cache(partial(customer_rfm, prepared))
    now = rfm(project.as_of)
    days = opts.horizon_days
    if opts.propensity:
        say(f"category propensity over {days} days")
        fit.propensity = train_propensity(project, prepared, horizon_days=days, rfm=rfm)
        frames["propensities"] = propensity_rows(fit.propensity, project, prepared, now)
    if opts.next_best_offers:
        say(f"the {opts.next_best_offers} next best offers")
        k = opts.next_best_offers
        fit.nbo = train_offers(project, prepared, k=k, horizon_days=days, rfm=rfm)
        sources = offer_sources(project, prepared, project.as_of)
        catalogue = _catalogue(prepared, sources)
        parts = offer_batches(
            fit.nbo, project, prepared, customers=now, sources=sources, catalogue=catalogue
        )
        frames["next_best_offers"] = pd.concat(list(parts), ignore_index=True)
        fit.files = offer_files(fit.nbo, sources, catalogue)
    for name, frame in frames.items():
        tables[name] = pa.Table.from_pandas(frame, preserve_index=False)
    return tables, frames, fit


# ---- served: the offers of posted customers, from a stored run's files ---------------------

#: the columns of the posted purchases, as the cleaned transactions have them
_POSTED_TX = {
    "customer_id": "string",
    "product_id": "string",
    "amount": "float64",
    "timestamp": "timestamp",
    "is_refund": "boolean",
}
#: the files a scoring run with offers keeps for the service (store ``run_files``)
OFFER_FILES = {
    "model": "nbo/model.json",
    "pairs": "nbo/pairs.parquet",
    "popular": "nbo/popular.parquet",
    "catalogue": "nbo/catalogue.parquet",
}


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def offer_files(
    model: NextBestOffer, sources: CandidateSources, catalogue: pd.DataFrame
) -> dict[str, bytes]:
    """The ranker and the run's candidate sources that do not depend on the customer (the
    co-purchase pairs, popularity, the catalogue with names), as :data:`OFFER_FILES`."""
    full = sources.catalogue.to_pyarrow().to_pandas().astype({"product_id": str})
    full = full.merge(catalogue[["product_id", "name"]], on="product_id", how="left")
    return {
        OFFER_FILES["model"]: model.dumps(),
        OFFER_FILES["pairs"]: _parquet(sources.pairs.to_pyarrow()),
        OFFER_FILES["popular"]: _parquet(sources.popular.to_pyarrow()),
        OFFER_FILES["catalogue"]: _parquet(pa.Table.from_pandas(full, preserve_index=False)),
    }


class ServedOffers:
    """The next best offers of customers who are not in the stored run (or whose purchases
    changed): the run's ranker over candidates from the run's co-purchase pairs, popularity
    and catalogue and the customer's own purchases, by :func:`candidates` itself, at the run's
    as-of date. For a customer of the run, with their purchases and features as the run saw
    them, the offers are the stored ones.

    One in-memory DuckDB holds the run's tables; requests take turns on it (a lock)."""

    def __init__(self, run_id: str, as_of: date, files: dict[str, bytes]) -> None:
        self.run_id, self.as_of = run_id, as_of
        self.model = NextBestOffer.loads(files[OFFER_FILES["model"]])
        schema = self.model.customer_schema_
        self.features: list[str] = [] if schema is None else list(schema.columns)
        self.con = ibis.duckdb.connect(threads=1)  # one customer's query: no parallel gain
        self.tables = {
            key: self.con.create_table(key, pq.read_table(io.BytesIO(files[name])))
            for key, name in OFFER_FILES.items()
            if key != "model"
        }
        self.names = self.tables["catalogue"].select("product_id", "name", "category").to_pandas()
        self.products = set(self.names["product_id"].astype(str))
        self._sql = self._compiled()
        self._lock = threading.Lock()

    def _compiled(self) -> str:
        """The candidates query, written once over the tables ``posted_tx`` and
        ``posted_customers``, which each request fills (building and compiling the expression
        took most of a request)."""
        tx = self.con.create_table("posted_tx", schema=ibis.schema(_POSTED_TX))
        ids = self.con.create_table(
            "posted_customers", schema=ibis.schema({"customer_id": "string"})
        )
        t = self.tables
        history = product_history(tx, self.as_of)
        cand = candidates(ids, history, t["pairs"], t["popular"], t["catalogue"], self.as_of)
        return engine.compiled(self.con, cand)

    def recommend(
        self, customers: pd.DataFrame, purchases: pd.DataFrame, k: int | None = None
    ) -> pd.DataFrame:
        """The ``k`` (default: the run's) offers of ``customers`` (customer_id and the ranker's
        features) from their ``purchases`` (customer_id, product_id, day, amount) before the
        run's as-of date: the store's ``next_best_offers`` columns."""
        tx = pa.table(
            {
                "customer_id": pa.array(purchases["customer_id"].astype(str), pa.string()),
                "product_id": pa.array(purchases["product_id"].astype(str), pa.string()),
                "amount": pa.array(purchases["amount"].astype(np.float64), pa.float64()),
                "timestamp": pa.array(pd.to_datetime(purchases["day"]), pa.timestamp("us")),
                "is_refund": pa.array(np.zeros(len(purchases), bool), pa.bool_()),
            }
        )
        ids = pa.table({"customer_id": pa.array(customers["customer_id"].astype(str), pa.string())})
        with self._lock:
            raw = self.con.con  # the DuckDB connection, for the query written once
            for name, rows in (("posted_tx", tx), ("posted_customers", ids)):
                raw.register("incoming", rows)
                raw.execute(f"DELETE FROM {name}")
                raw.execute(f"INSERT INTO {name} BY NAME SELECT * FROM incoming")
                raw.unregister("incoming")
            got = engine.arrow(self.con, self._sql)
        frame = got.to_pandas(types_mapper=pd.ArrowDtype)
        if frame.empty:
            empty = ("customer_id", "rank", "product_id", "score", "source", "reason")
            return _described(pd.DataFrame({c: [] for c in empty}), self.names)
        offers = self.model.recommend(_ordered(frame), customers, self.names, k=k)
        return _described(offers, self.names)
