"""The commented example project file that ``custval init`` writes."""

TEMPLATE = """\
# custval project file. Paths are relative to this file; ${VAR} is read from the environment.
# Check it with:   custval validate --config custval.toml
# Build features:  custval features --config custval.toml --out features.parquet

# Features use only data strictly before this date.
as_of = "2025-12-31"
# Unit of the BTYD columns recency and T: "weeks" (the literature's) or "days".
time_unit = "weeks"
# Where `custval score` keeps its runs: a DuckDB file, or PostgreSQL for production, e.g.
# store = "postgresql://custval:${CUSTVAL_PG_PASSWORD}@db.example.com:5432/analytics"
store = "custval.duckdb"

[identity]
# The source of kind "id_map" that links ids across sources, one column per id namespace.
map_source = "id_map"
# The namespace whose id becomes customer_id.
primary = "crm_id"

[features]
# Spend trend compares the last N days before as_of with the N days before those.
trend_window_days = 90

[clv]
# How `custval score` predicts CLV: "btyd" (BG/NBD and Gamma-Gamma), "ml" (the best of
# LightGBM, random forest and a neural network on every feature), "hybrid" (LightGBM on the
# features and the BTYD outputs) or "auto" (all judged on the last horizon; the best kept).
# `custval clv -c custval.toml --method auto` shows the leaderboard first.
method = "btyd"
# horizon = 52            # in time_unit; default one year
discount_per_year = 0.10

# One [sources.NAME] table per source. kind is one of: transactions, customers, web_sessions,
# product_usage, interactions, subscriptions, treatments (a campaign log with a control group),
# products (a catalogue), id_map. [sources.NAME.columns] maps custval's column names
# (left) to yours (right); unmapped columns are expected under custval's names.

[sources.crm]
kind = "customers"
uri = "data/crm_customers.csv"          # CSV, Parquet or JSON lines; globs like data/crm_*.csv
id_namespace = "crm_id"
[sources.crm.columns]
customer_id = "crm_id"
# signup_date, birth_date, region, acquisition_channel, plan, services, segment_label

[sources.transactions]
kind = "transactions"
# A database: uri = "postgresql://user@host:5432/shop" with table = "orders" or
# query = "select * from orders where amount is not null"
uri = "data/transactions.csv"
id_namespace = "account_id"
# Tried in order on text dates (strptime codes); the default list covers ISO, 2025/01/31,
# 31.01.2025 and 31/01/2025 (day first).
# date_formats = ["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M"]
[sources.transactions.columns]
customer_id = "account_id"
timestamp = "ts"
# order_id, amount, category, channel

[sources.web]
kind = "web_sessions"
uri = "data/web_sessions.csv"
id_namespace = "visitor_id"
[sources.web.columns]
customer_id = "visitor_id"
timestamp = "started_at"

# An HTTP JSON API, paged:
# [sources.tickets]
# kind = "interactions"
# uri = "https://support.example.com/api/tickets"
# id_namespace = "crm_id"
# [sources.tickets.http]
# pagination = "cursor"          # or "page" or "none"
# records_field = "data"         # where the list of records is in each response
# next_cursor_field = "next"
# headers = { Authorization = "Bearer ${SUPPORT_TOKEN}" }

[sources.id_map]
kind = "id_map"
uri = "data/id_map.csv"
# [sources.id_map.columns]
# crm_id = "customer_number"

# What custval score adds to each run (all off by default; docs/actions.md):
# [actions]
# churn = true               # churn risk with reasons (cancellations, else lapses)
# propensity = true          # the chance of buying in each product category
# next_best_offers = 5       # products per customer, each with a reason
# playbooks = true           # per segment and customer: offer, channel, timing, retention
# targeting_budget = 1000.0  # a retention list within this budget

# When custval monitor alarms (exit 1) and custval retrain promotes (these are the defaults):
# [monitor]
# alpha = 0.01               # the drift test's level, per column
# min_psi = 0.005            # the smallest PSI worth an alarm
# max_alarms = 0             # columns that may drift before monitor fails
# auc_drop = 0.05            # estimated ROC AUC this far below training's alarms
# promote_margin = 0.005     # ROC AUC a challenger must gain to replace the champion
# segment_stability = 0.7    # share of customers a new segmentation must keep together

# Where the sources are read, the features computed and the customers scored (docs/scale.md;
# --engine on the commands overrides kind for one run):
# [engine]
# kind = "spark"                              # default "duckdb": this process; or "postgres"
# url = "sc://spark-connect.example.com:15002" # default: SPARK_REMOTE (postgres: postgresql://...)
# staging = "s3://my-bucket/custval-runs"     # where Spark writes a run's scored rows
# train_sample = 1000000                      # customers drawn there to fit the models on
"""
