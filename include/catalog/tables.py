"""The catalog tables, declared on the project's shared ``include.db.metadata``.

- ``catalog_versions``: one row per (partner, kind, file content): its checks, the TG item that
  carries its diff, the retailer's answer, and whether it was loaded or superseded.
- ``catalog_version_rows``: the rows of a version as received (mapped to our columns, JSON text),
  staged at intake so the gated load and the next diff need no file. The partner's *accepted*
  version is the one ``catalog_accepted`` points at: the diff compares against its rows.
- the audit trail is not here: it is the exchange journal (``include.exchange.journal``), one line
  per thing that happened to a version (use case ``catalog_sync``, subject ``catalog_version:<id>``).
- ``downstream_*``: the tables downstream systems read; replaced per partner and kind, in one
  transaction, only by an acknowledged version.
"""
from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from include.db import metadata

# Version statuses, in the order a version normally goes through them.
RECEIVED = "received"  # registered, not yet checked
REJECTED = "rejected"  # failed its checks: quarantined, validation_failure case posted
VALIDATED = "validated"  # checks passed, rows staged
PENDING_ACK = "pending_ack"  # diff posted to TG, waiting for the retailer
ACKNOWLEDGED = "acknowledged"  # retailer acknowledged or resolved the item: may be loaded
DISPUTED = "disputed"  # retailer disputed: not loaded until a corrected file supersedes it
LOADED = "loaded"  # in the downstream tables; now the accepted version
SUPERSEDED = "superseded"  # a newer version arrived before this one was loaded

OPEN_STATUSES = (VALIDATED, PENDING_ACK, ACKNOWLEDGED, DISPUTED)

catalog_versions = Table(
    "catalog_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner_key", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("size", Integer),
    Column("status", String(20), nullable=False, default=RECEIVED),
    # When the partner sent it (file mtime): orders versions; a backfill may register an older one late.
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("interval_start", DateTime(timezone=True)),
    Column("interval_end", DateTime(timezone=True)),
    Column("run_id", String(250)),
    Column("row_count", Integer),
    Column("checks_passed", Boolean),
    Column("checks_summary", Text),  # JSON: the CheckReport summary
    Column("tg_item_id", String(64)),
    Column("tg_external_ref", String(200)),
    Column("posted_at", DateTime(timezone=True)),
    Column("diff_counts", Text),  # JSON: CatalogDiff.counts()
    Column("decided_status", String(20)),  # the TG status that decided: acknowledged | resolved | disputed
    Column("decided_by", String(200)),
    Column("decided_at", DateTime(timezone=True)),
    Column("loaded_at", DateTime(timezone=True)),
    Column("superseded_by", Integer, ForeignKey("catalog_versions.id")),
    Column("superseded_at", DateTime(timezone=True)),
    UniqueConstraint("partner_key", "kind", "sha256"),
    Index(None, "partner_key", "kind", "sent_at"),
)

catalog_version_rows = Table(
    "catalog_version_rows",
    metadata,
    Column("version_id", Integer, ForeignKey("catalog_versions.id"), primary_key=True),
    Column("sku", String(128), primary_key=True),
    Column("data", Text, nullable=False),  # JSON object, our column names, values as text
)

catalog_accepted = Table(
    "catalog_accepted",
    metadata,
    Column("partner_key", String(64), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("version_id", Integer, ForeignKey("catalog_versions.id"), nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
)

downstream_catalog_items = Table(
    "downstream_catalog_items",
    metadata,
    Column("partner_key", String(64), primary_key=True),
    Column("sku", String(128), primary_key=True),
    Column("gtin", String(14), nullable=False),
    Column("description", Text, nullable=False),
    Column("brand", String(200), nullable=False),
    Column("unit_of_measure", String(20), nullable=False),
    Column("pack_size", Integer, nullable=False),
    Column("version_id", Integer, ForeignKey("catalog_versions.id"), nullable=False),
)

downstream_prices = Table(
    "downstream_prices",
    metadata,
    Column("partner_key", String(64), primary_key=True),
    Column("sku", String(128), primary_key=True),
    Column("price", Numeric(14, 4), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("effective_date", Date, nullable=False),
    Column("version_id", Integer, ForeignKey("catalog_versions.id"), nullable=False),
)

downstream_promotions = Table(
    "downstream_promotions",
    metadata,
    Column("partner_key", String(64), primary_key=True),
    Column("sku", String(128), primary_key=True),
    Column("promo_price", Numeric(14, 4), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("version_id", Integer, ForeignKey("catalog_versions.id"), nullable=False),
)

DOWNSTREAM = {
    "catalog": downstream_catalog_items,
    "price_list": downstream_prices,
    "promotions": downstream_promotions,
}
