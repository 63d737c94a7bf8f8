"""Where custval keeps what it made: runs in a DuckDB file or PostgreSQL (:mod:`.runs`) and
trained value models as folders (:mod:`.bundles`)."""

from custval.store.runs import MIGRATIONS, Store, directions, long_reasons, open_store

__all__ = ["MIGRATIONS", "Store", "directions", "long_reasons", "open_store"]
