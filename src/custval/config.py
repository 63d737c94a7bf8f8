"""The project file, ``custval.toml``, as typed settings.

A project names its sources (where each table comes from and which of custval's table kinds it
is), how the user's column names map onto custval's, how identities link, and the as-of date at
which features are computed. ``custval init`` writes a commented example.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from custval.errors import ConfigError, CustvalError

SourceKind = Literal[
    "transactions",
    "customers",
    "web_sessions",
    "product_usage",
    "interactions",
    "id_map",
    "products",
    "subscriptions",
    "treatments",
]
#: kinds whose rows describe something other than a customer (no id namespace to link)
NOT_CUSTOMER_KINDS: tuple[str, ...] = ("id_map", "products")
FileFormat = Literal["csv", "parquet", "json", "xlsx"]

# Tried in order on string dates. Day-first is chosen over month-first for slashed dates because
# most of the world writes dates that way; a source that differs sets ``date_formats``.
DEFAULT_DATE_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%Y%m%d",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpOptions(_Strict):
    """How to page through an HTTP JSON API and how hard to retry.

    ``pagination = "page"`` asks ``?page=1&page_size=N``, ``?page=2...`` until a page holds fewer
    than ``page_size`` records; ``"cursor"`` passes back the cursor found at ``next_cursor_field``
    until it is empty; ``"none"`` makes one request.
    """

    pagination: Literal["none", "page", "cursor"] = "page"
    records_field: str | None = Field(
        "data", description="dotted path to the list of records in each response; None: the body"
    )
    page_param: str = "page"
    page_size_param: str = "page_size"
    page_size: int = Field(1000, ge=1)
    first_page: int = 1
    cursor_param: str = "cursor"
    next_cursor_field: str = "next_cursor"
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx and timeouts")
    backoff_s: float = Field(0.5, ge=0, description="first wait; doubles each retry")
    max_pages: int = Field(100_000, ge=1)


class CsvOptions(_Strict):
    """How to read delimited text files. By default DuckDB detects the delimiter and there is a
    header row. Files whose fields are separated by runs of blanks, perhaps with leading ones
    (CDNOW's, say), use ``delimiter = "whitespace"``."""

    delimiter: str | None = Field(
        None,
        description='field separator; None: detected; "whitespace": runs of spaces or tabs',
    )
    header: bool = True
    names: list[str] | None = Field(None, description="column names, for files without a header")
    encoding: Literal["utf-8", "utf-16", "latin-1", "cp1252"] | None = Field(
        None, description="None: UTF-8, else cp1252 (with a note) when the file is not UTF-8"
    )
    decimal: Literal[".", ","] | None = Field(
        None, description="decimal mark of numbers; None: detected when unambiguous"
    )


class SourceSpec(_Strict):
    """One source: where it is, what kind of table it holds, and its column names.

    ``uri`` is a file path or glob (CSV, Parquet, JSON lines), a database URL (``duckdb:///x.db``,
    ``sqlite:///x.db``, ``postgresql://user@host/db``) with ``table`` or ``query``, or an
    ``http(s)://`` JSON API. ``${VAR}`` in the URI is taken from the environment.
    ``columns`` maps custval's column names (keys) to the source's own (values); unmapped columns
    are expected under custval's names.
    """

    name: str = ""
    kind: SourceKind
    uri: str
    table: str | None = None
    query: str | None = None
    format: FileFormat | None = None
    id_namespace: str | None = Field(
        None,
        description="the id-map column this source's customer key belongs to (e.g. account_id)",
    )
    columns: dict[str, str] = Field(default_factory=dict)
    date_formats: list[str] | None = None
    http: HttpOptions = Field(default_factory=HttpOptions)
    csv: CsvOptions = Field(default_factory=CsvOptions)
    flags: dict[str, str] = Field(
        default_factory=dict,
        exclude=True,
        description="set by a command that builds the source from its flags (clv -t): custval's "
        "column or setting -> the flag, so that hints name the flag rather than custval.toml",
    )

    @model_validator(mode="after")
    def _one_of_table_query(self) -> SourceSpec:
        if self.table and self.query:
            raise ValueError("give either 'table' or 'query', not both")
        return self

    def column(self, canonical: str) -> str:
        """The source's own name for one of custval's columns."""
        return self.columns.get(canonical, canonical)

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(self.date_formats) if self.date_formats else DEFAULT_DATE_FORMATS

    @property
    def is_database(self) -> bool:
        return self.uri.split(":", 1)[0].lower() in {"duckdb", "sqlite", "postgresql", "postgres"}

    @property
    def is_http(self) -> bool:
        return self.uri.lower().startswith(("http://", "https://"))


class IdentitySpec(_Strict):
    """How per-source ids become one ``customer_id``.

    ``map_source`` names the ``id_map`` source; its columns are id namespaces (crm_id,
    visitor_id, account_id...). ``primary`` is the namespace whose value becomes customer_id.
    """

    map_source: str | None = None
    primary: str = "crm_id"


FeatureGroup = Literal[
    "rfm",
    "rhythm",
    "trend",
    "mix",
    "profile",
    "web",
    "product",
    "service",
    "subscription",
    "offers",
]


class AutoSource(_Strict):
    """``[features.auto.sources.NAME]``: how a source's rows feed the generated features
    (each setting defaults to what the source's contract says)."""

    time: str | None = Field(None, description="the date or timestamp column the windows use")
    numeric: list[str] | None = Field(None, description="columns summed, averaged, ...")
    categorical: list[str] | None = Field(None, description="columns counted by value")
    group: str | None = Field(None, description="a key of groups of rows (an order's lines)")


class AutoFeatureOptions(_Strict):
    """``[features.auto]``: the generated features (``custval features --auto``): every
    related table aggregated in ``windows`` of days before the as-of date (and over the whole
    history), at most ``max_features`` of them."""

    windows: list[int] = Field(
        default_factory=lambda: [30, 90, 365], min_length=1, description="days, each 1 to 3650"
    )
    max_features: int = Field(2000, ge=1, description="more generated features is an error")
    sources: dict[str, AutoSource] = Field(default_factory=dict)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[int]) -> list[int]:
        if any(not 1 <= w <= 3650 for w in value):
            raise ValueError("each window is 1 to 3650 days")
        return sorted(set(value))


class FeatureOptions(_Strict):
    """Feature settings. Windows are in days; ``groups`` picks feature groups (default: all);
    ``auto`` sets the generated features."""

    trend_window_days: int = Field(90, ge=1)
    groups: list[FeatureGroup] = Field(default_factory=lambda: list(get_args(FeatureGroup)))
    auto: AutoFeatureOptions = Field(default_factory=AutoFeatureOptions)


ClvMethod = Literal["btyd", "ml", "hybrid", "auto"]
#: the purchase models of ``[clv] model`` and ``custval clv --model``
PurchaseModel = Literal["auto", "bgnbd", "mbgnbd", "pnbd"]
#: the CLV methods of ``[clv] method``, ``custval clv --method`` and ``custval score``
CLV_METHOD_NAMES: tuple[str, ...] = get_args(ClvMethod)


def check_clv_method(name: str) -> str:
    """``name`` when it is a CLV method, else a clear error."""
    if name not in CLV_METHOD_NAMES:
        raise CustvalError(
            f"unknown CLV method '{name}'", hint="Use " + ", ".join(CLV_METHOD_NAMES)
        )
    return name


class ClvOptions(_Strict):
    """How ``custval score`` predicts CLV: ``method`` btyd (BG/NBD and Gamma-Gamma), ml (the
    best of LightGBM, random forest and neural network on the features), hybrid (LightGBM on
    the features and the BTYD outputs) or auto (the leaderboard's pick; see
    :mod:`custval.flows.leaderboard`); over ``horizon`` time units (default: a year), discounted
    at ``discount_per_year``. ``model`` is the purchase model: bgnbd, mbgnbd, pnbd, or auto
    (all three fitted, the best kept: by holdout error when there is a holdout, else by AIC;
    :func:`custval.models.btyd_clv.choose_purchase_model`)."""

    method: ClvMethod = "btyd"
    model: PurchaseModel = "auto"
    horizon: float | None = Field(None, gt=0, description="time units; None: a year")
    discount_per_year: float = Field(0.10, ge=0, lt=1)


class ActionOptions(_Strict):
    """What ``custval score`` adds to each run besides value, CLV and segment: ``churn`` risk,
    category ``propensity``, ``next_best_offers`` (that many per customer; 0: none), a targeting
    list within ``targeting_budget`` (currency; none without a budget) at ``contact_cost`` per
    contact (default: the campaign log's mean cost), and the ``playbooks`` per segment and per
    customer. Churn and propensity look ``horizon_days`` ahead. All off by default: each costs
    a model fit per run (:mod:`custval.flows.actions`)."""

    churn: bool = False
    propensity: bool = False
    next_best_offers: int = Field(0, ge=0, le=100, description="offers per customer; 0: none")
    playbooks: bool = False
    targeting_budget: float | None = Field(None, gt=0, description="currency; None: no list")
    contact_cost: float | None = Field(None, ge=0, description="None: the campaign log's mean")
    horizon_days: int = Field(91, ge=7, le=730, description="how far churn and propensity look")

    @property
    def any(self) -> bool:
        """Whether the project asks for any action."""
        return bool(
            self.churn
            or self.propensity
            or self.next_best_offers
            or self.playbooks
            or self.targeting_budget
        )


class MonitorOptions(_Strict):
    """``[monitor]``: when ``custval monitor`` alarms, and when ``custval retrain`` promotes
    (:mod:`custval.flows.monitor`, :mod:`custval.flows.retraining`)."""

    alpha: float = Field(0.01, gt=0, lt=0.5, description="the drift test's level")
    min_psi: float = Field(0.005, ge=0, description="the smallest PSI worth an alarm")
    max_alarms: int = Field(
        0, ge=0, description="columns that may alarm before monitor fails (0: any fails it)"
    )
    auc_drop: float = Field(
        0.05, gt=0, lt=1, description="estimated ROC AUC this far below training's alarms"
    )
    promote_margin: float = Field(
        0.005, ge=0, lt=1, description="ROC AUC a challenger must gain to replace the champion"
    )
    segment_stability: float = Field(
        0.7, ge=0, le=1, description="share of customers a new segmentation must keep together"
    )


EngineKind = Literal["duckdb", "postgres", "spark"]
#: the engines of ``[engine] kind`` and the commands' ``--engine``
ENGINE_NAMES: tuple[str, ...] = get_args(EngineKind)


class EngineOptions(_Strict):
    """``[engine]``: where the sources are read and the features computed (and, on Spark, the
    customers scored). ``duckdb`` (default): in this process, sources of any kind (database
    tables are copied in). ``postgres``: in the PostgreSQL database of ``url``
    (``postgresql://user@host/db``), where its own tables are read in place and other sources
    are copied in; the features then come here to be scored. ``spark``: on a Spark cluster
    through ``url``, a Spark Connect address (``sc://host:15002``; default: the
    ``SPARK_REMOTE`` variable) or a master for a Spark of this machine's pyspark (``local[4]``,
    needs Java); ``settings`` are Spark settings for the session
    (``spark.sql.shuffle.partitions`` and the like). Models are trained on this machine, on at
    most ``train_sample`` customers drawn on the engine (:doc:`docs/scale.md`)."""

    kind: EngineKind = "duckdb"
    url: str | None = Field(
        None,
        description="Spark: sc://host:port or local[N]; PostgreSQL: postgresql://...; "
        "${VAR} expanded",
    )
    settings: dict[str, str] = Field(default_factory=dict)
    connect_timeout_s: float = Field(30.0, gt=0, description="how long to wait for the engine")
    train_sample: int = Field(
        1_000_000, ge=1000, description="customers drawn on the engine to fit the models on"
    )
    partitions: int | None = Field(
        None, ge=1, description="scoring partitions on Spark; None: the cluster's default"
    )
    staging: str | None = Field(
        None,
        description="a folder Spark writes a scoring run's files to and this machine reads "
        "(s3://..., abfss://..., a shared folder); None: a temporary folder here (local Spark)",
    )


def with_engine(project: Project, kind: str, flag: str = "[engine] kind") -> Project:
    """``project`` run on the engine ``kind`` (its [engine] settings kept), or a clear error."""
    if kind not in ENGINE_NAMES:
        raise CustvalError(
            f"unknown engine '{kind}' ({flag})", hint="Use " + ", ".join(ENGINE_NAMES)
        )
    engine = project.engine.model_copy(update={"kind": kind})
    return project.model_copy(update={"engine": engine})


class Project(_Strict):
    """A custval project: sources, identity, as-of date and options."""

    as_of: date
    time_unit: Literal["days", "weeks", "months", "years"] = "weeks"
    sources: dict[str, SourceSpec]
    identity: IdentitySpec = Field(default_factory=IdentitySpec)
    features: FeatureOptions = Field(default_factory=FeatureOptions)
    clv: ClvOptions = Field(default_factory=ClvOptions)
    actions: ActionOptions = Field(default_factory=ActionOptions)
    monitor: MonitorOptions = Field(default_factory=MonitorOptions)
    engine: EngineOptions = Field(default_factory=EngineOptions)
    store: str = Field(
        "custval.duckdb",
        description="where scoring runs are kept: a DuckDB file (relative to the project "
        "file) or a postgresql:// URL; ${VAR} is read from the environment",
    )
    root: Path = Field(Path(), exclude=True)

    @model_validator(mode="after")
    def _check(self) -> Project:
        for name, spec in self.sources.items():
            spec.name = name
        kinds = [s.kind for s in self.sources.values()]
        if "transactions" not in kinds and "customers" not in kinds:
            raise ValueError("at least one source of kind 'transactions' or 'customers' is needed")
        if kinds.count("customers") > 1:
            raise ValueError(
                "more than one source of kind 'customers': a customer needs one profile, so "
                "merge them into one (a database query or a view can)"
            )
        if self.identity.map_source is not None:
            src = self.sources.get(self.identity.map_source)
            if src is None or src.kind != "id_map":
                raise ValueError(
                    f"identity.map_source = '{self.identity.map_source}' is not a source of "
                    "kind 'id_map'"
                )
            # without it a source would silently be taken as keyed by the primary id
            unsaid = [
                n
                for n, s in self.sources.items()
                if s.kind not in NOT_CUSTOMER_KINDS and not s.id_namespace
            ]
            if unsaid:
                raise ValueError(
                    "with an id map, every source must say which id its rows carry: set "
                    f"id_namespace for {', '.join(unsaid)} (e.g. id_namespace = "
                    f'"{self.identity.primary}")'
                )
        return self

    def sources_of(self, kind: str) -> list[SourceSpec]:
        return [s for s in self.sources.values() if s.kind == kind]


def _resolve_uri(uri: str, root: Path) -> str:
    uri = os.path.expandvars(uri)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in {"duckdb", "sqlite"}:
        # duckdb://rel/x.db is relative to the project file; duckdb:///abs/x.db is absolute
        path = uri.split("://", 1)[1]
        if path in {"", ":memory:"} or Path(path).is_absolute():
            return uri
        return f"{scheme}://{(root / path).resolve()}"
    if scheme in {"", "file"}:
        path = uri.split("://", 1)[1] if scheme else uri
        return str(Path(path) if Path(path).is_absolute() else (root / path))
    return uri


def _resolve_store(url: str, root: Path) -> str:
    """A PostgreSQL URL as given (variables expanded); a DuckDB file as an absolute path."""
    url = os.path.expandvars(url)
    if url.startswith(("postgresql://", "postgres://")):
        return url
    path = Path(url.removeprefix("duckdb://"))
    return str(path if path.is_absolute() else (root / path).resolve())


def load_project(path: str | Path) -> Project:
    """Read and check ``custval.toml``; relative file paths are taken from its folder.

    Example
    -------
    >>> project = load_project("custval.toml")  # doctest: +SKIP
    >>> project.as_of
    datetime.date(2025, 12, 31)
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"the project file '{path}' does not exist",
            hint="run 'custval init' to write a commented example",
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the project file '{path}' is not valid TOML: {exc}") from None
    return project_from_dict(raw, root=path.resolve().parent, origin=str(path))


def project_from_dict(raw: dict, *, root: Path, origin: str = "custval.toml") -> Project:
    """Build a :class:`Project` from a parsed TOML mapping (paths relative to ``root``)."""
    try:
        project = Project.model_validate({**raw, "root": root})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"the project file '{origin}' is invalid: {problems}") from None
    project.store = _resolve_store(project.store, root)
    if project.engine.url is not None:
        project.engine.url = os.path.expandvars(project.engine.url)
    for spec in project.sources.values():
        spec.uri = _resolve_uri(spec.uri, root)
        # secrets such as API tokens stay in the environment, not in the project file
        spec.http.headers = {k: os.path.expandvars(v) for k, v in spec.http.headers.items()}
    return project


#: query parameters whose values are secrets: never shown in a message
SECRET_PARAM = re.compile(r"key|token|secret|password", re.IGNORECASE)
#: the password in a URL's user information (``user:password@``)
USERINFO_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^/@:\s]*):[^/@\s]*@")


def mask_url(url: str) -> str:
    """``url`` fit for a message: the password after ``user:`` is hidden and query parameters
    whose names contain key, token, secret or password are left out.

    Example
    -------
    >>> mask_url("postgresql://bob:hunter2@db:5432/crm?sslmode=require&api_key=abc")
    'postgresql://bob:***@db:5432/crm?sslmode=require'
    """
    # Plain string surgery rather than urlsplit/urlunsplit, which turn duckdb:///x.db into
    # duckdb:/x.db: the message should show the URL as the user wrote it.
    text = USERINFO_PASSWORD.sub(r"\g<head>:***@", url)
    base, question, rest = text.partition("?")
    if not question:
        return text
    query, hash_, fragment = rest.partition("#")
    kept = [
        pair
        for pair in query.split("&")
        if pair and not SECRET_PARAM.search(unquote_plus(pair.split("=", 1)[0]))
    ]
    return base + ("?" + "&".join(kept) if kept else "") + hash_ + fragment
