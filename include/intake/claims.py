"""The one claim-token rule: which run holds a file in the intake ledger.

A token is stable for a DAG run (``dag_id`` + ``run_id``), so a retried or cleared task of the same
run keeps its own claims, and two runs (a backfill beside the current cycle) never share one.
"""
from __future__ import annotations

import hashlib


def claim_token(dag_id: str, run_id: str) -> str:
    return "run:" + hashlib.sha1(f"{dag_id}/{run_id}".encode()).hexdigest()[:16]
