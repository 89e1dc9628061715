"""The one way to name a Trading Grid item: ``external_ref`` and the ``Idempotency-Key``.

Why: a rerun, a cleared task or an overlapping backfill must land on the item the first run created,
never post a second one. TG lets a client name an item with ``external_ref`` (unique per community)
and replays a POST whose ``Idempotency-Key`` and body it has seen. So both are derived here from what
makes an item unique, never from when or by which run it was posted.

``external_ref(use_case, partner_id, subject, reason)`` →
``tg1:<use_case>:<partner_id>:<subject>:<reason>``, e.g.
``tg1:document_delivery:P-ACME:invoice-2026-11-25.csv:notify`` or, for a subject that is long or
has characters outside ``[A-Za-z0-9._-]``, ``tg1:document_delivery:P-ACME:h-<40 hex of sha256>:notify``.

- ``use_case``: the DAG's use case / TG category (``document_delivery``, ``catalog_sync``, ...).
- ``partner_id``: the TG partner id (``P-ACME``), so two partners never share an item.
- ``subject``: the business key of what the item is about: a file's sha256, an order number, a
  catalog version. Not a run id, not a timestamp (unless the timestamp *is* the business key).
- ``reason``: why the item exists (``notify``, ``validation_failed``, ``missing_file``), so one
  subject can have one item per reason.

``idempotency_key(external_ref, payload)`` = ``tg1-`` + sha256(external_ref + canonical JSON of the
body). Same body → same key → TG replays (200, same item). Changed body (e.g. a new ``run_id`` in the
metadata) → new key → TG answers 409 "external_ref taken" → the hook fetches the existing item and
returns it with ``created=False``. So the key never hits TG's "same key, different body → 422" rule,
and a rerun converges whatever it changed in the body.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

REF_VERSION = "tg1"
MAX_REF_LENGTH = 200
MAX_READABLE_SUBJECT = 64
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
_MAX_PART = 40  # use_case / partner_id / reason


def _check_part(name: str, value: str) -> str:
    value = str(value).strip()
    if not value or len(value) > _MAX_PART or not _SAFE.match(value):
        raise ValueError(
            f"{name} must be 1-{_MAX_PART} characters of [A-Za-z0-9._-], got {value!r}"
        )
    return value


def subject_token(subject: str) -> str:
    """The subject as it appears in the ref: itself if short and safe, else ``h-`` + 40 hex of its sha256."""
    text = str(subject).strip()
    if not text:
        raise ValueError("subject must not be empty")
    if len(text) <= MAX_READABLE_SUBJECT and _SAFE.match(text) and not text.startswith("h-"):
        return text
    return "h-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def external_ref(use_case: str, partner_id: str, subject: str, reason: str) -> str:
    """Derive the item's ``external_ref`` from what makes the item unique (see module docstring)."""
    ref = ":".join(
        (
            REF_VERSION,
            _check_part("use_case", use_case),
            _check_part("partner_id", partner_id),
            subject_token(subject),
            _check_part("reason", reason),
        )
    )
    # Bounded by construction (4 x 40 + 66 + separators); asserted so a future change cannot drift.
    assert len(ref) <= MAX_REF_LENGTH, ref
    return ref


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """The body bytes the hook sends and hashes: sorted keys, no spaces, UTF-8."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode(
        "utf-8"
    )


def idempotency_key(ref: str, payload: Mapping[str, Any], *, body: bytes | None = None) -> str:
    """Key for ``POST items``: stable for the same ref and body, different when the body changes.

    ``body`` is ``canonical_json(payload)`` when the caller has it already (the hook sends those bytes).
    """
    digest = hashlib.sha256(ref.encode("utf-8") + b"\n" + (body if body is not None else canonical_json(payload))).hexdigest()
    return f"{REF_VERSION}-{digest}"
