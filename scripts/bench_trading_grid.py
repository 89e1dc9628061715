"""Benchmark the Trading Grid hook against the sandbox, as ratios measured in one run.

Starts one sandbox (``start_sandbox`` in a temporary directory, SQLite), then prints:

(a) hook overhead: posts/s creating items through ``TradingGridHook.create_item`` vs a bare keep-alive
    ``http.client`` loop posting bodies of the same shape with precomputed keys (the cheapest client
    possible). Alternating rounds, so drift of the server (a growing database) hits both alike.
    Target: ratio >= 0.8.
(b) bulk mode: with 50 ms latency injected into every answer, ``create_items(max_concurrency=16)``
    vs one ``create_item`` at a time. Target: >= 8x. Then checks that exactly one item exists per ref.
(c) the sandbox's own ceiling: creates/s with several bare ``http.client`` clients in parallel
    processes, so the other figures can be read against it.

Run: ``.venv/bin/python scripts/bench_trading_grid.py`` (about two minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def payloads(tag: str, n: int, partner_id: str = "P-ACME") -> list[dict]:
    """``n`` item bodies of realistic size, each with its own derived external_ref."""
    from trading_grid.refs import external_ref

    out = []
    for i in range(n):
        subject = f"bench-{tag}-{i:05d}"
        out.append(
            {
                "external_ref": external_ref("document_delivery", partner_id, subject, "notify"),
                "partner_id": partner_id,
                "type": "notification",
                "category": "document_delivery",
                "title": f"Delivery {subject}.csv received",
                "body": "The file was received and passed its checks.\n\n| rows | 1200 |\n|---|---|",
                "severity": "info",
                "requires_ack": True,
                "metadata": {"file_name": f"{subject}.csv", "sha256": "0" * 64, "size": 48213, "run_id": "bench__1"},
            }
        )
    return out


class BareClient:
    """The cheapest possible client: one keep-alive http.client connection, bodies and keys precomputed."""

    def __init__(self, host: str, port: int, path: str, token: str) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.path = path
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post_all(self, prepared: list[tuple[bytes, str]]) -> int:
        ok = 0
        for body, key in prepared:
            self.conn.request("POST", self.path, body=body, headers={**self.headers, "Idempotency-Key": key})
            resp = self.conn.getresponse()
            resp.read()
            ok += resp.status in (200, 201)
        return ok

    def close(self) -> None:
        self.conn.close()


def prepare(bodies: list[dict]) -> list[tuple[bytes, str]]:
    from trading_grid.refs import canonical_json, idempotency_key

    return [(canonical_json(b), idempotency_key(b["external_ref"], b)) for b in bodies]


def _ceiling_worker(args: tuple[str, int, str, str, str, int]) -> tuple[int, float]:
    host, port, path, token, tag, n = args
    sys.path[:0] = [str(REPO), str(REPO / "plugins")]
    prepared = prepare(payloads(tag, n))
    client = BareClient(host, port, path, token)
    start = time.perf_counter()
    ok = client.post_all(prepared)
    elapsed = time.perf_counter() - start
    client.close()
    return ok, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=2000, help="(a) posts per client")
    parser.add_argument("--rounds", type=int, default=4, help="(a) alternating rounds")
    parser.add_argument("--bulk", type=int, default=1000, help="(b) posts per mode")
    parser.add_argument("--latency-ms", type=int, default=50, help="(b) injected latency")
    parser.add_argument("--concurrency", type=int, default=16, help="(b) bulk max_concurrency")
    parser.add_argument("--clients", type=int, default=4, help="(c) parallel bare clients")
    parser.add_argument("--ceiling-posts", type=int, default=750, help="(c) posts per client")
    args = parser.parse_args()

    from tests.support.tg_sandbox import start_sandbox
    from trading_grid.hooks.trading_grid import TradingGridHook

    with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmp, start_sandbox(Path(tmp) / "sandbox") as sbx:
        os.environ["AIRFLOW_CONN_TRADING_GRID_BENCH"] = sbx.airflow_conn_json()
        items_path = f"/v1/communities/{sbx.community_id}/items"
        token = sbx.token(*sbx.enterprise)
        print(f"sandbox {sbx.base_url} (SQLite, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})\n")

        # ---------------------------------------------------------------- (a) hook overhead
        hook = TradingGridHook("trading_grid_bench")
        hook.create_item(payloads("warm", 1)[0])
        warm = BareClient("127.0.0.1", sbx.port, items_path, token)
        warm.post_all(prepare(payloads("warmbare", 50)))
        per_round = args.posts // args.rounds
        bare_time = hook_time = bare_cpu = hook_cpu = 0.0
        bare_ok = hook_created = 0
        for r in range(args.rounds):
            prepared = prepare(payloads(f"a-bare-{r}", per_round))
            start, cpu = time.perf_counter(), time.process_time()
            bare_ok += warm.post_all(prepared)
            bare_time += time.perf_counter() - start
            bare_cpu += time.process_time() - cpu
            bodies = payloads(f"a-hook-{r}", per_round)
            start, cpu = time.perf_counter(), time.process_time()
            for body in bodies:
                hook_created += hook.create_item(body)[1]
            hook_time += time.perf_counter() - start
            hook_cpu += time.process_time() - cpu
        warm.close()
        bare_rate, hook_rate = bare_ok / bare_time, hook_created / hook_time
        print(f"(a) {args.posts} creates, one client, keep-alive")
        print(f"    bare http.client : {bare_rate:8.1f} posts/s ({bare_ok} ok; client CPU {bare_cpu / bare_ok * 1000:.2f} ms/post)")
        print(f"    TradingGridHook  : {hook_rate:8.1f} posts/s ({hook_created} created; client CPU {hook_cpu / hook_created * 1000:.2f} ms/post, key derivation included)")
        print(f"    ratio hook/bare  : {hook_rate / bare_rate:8.2f}   (target >= 0.8)\n")

        # ---------------------------------------------------------------- (b) bulk under latency
        sbx.set_faults(latency_ms=args.latency_ms)
        tag = uuid.uuid4().hex[:6]
        serial_bodies = payloads(f"b-serial-{tag}", args.bulk)
        bulk_bodies = payloads(f"b-bulk-{tag}", args.bulk)
        start = time.perf_counter()
        serial = [hook.create_item(b) for b in serial_bodies]
        serial_time = time.perf_counter() - start
        start = time.perf_counter()
        bulk = hook.create_items(bulk_bodies, max_concurrency=args.concurrency)
        bulk_time = time.perf_counter() - start
        sbx.clear_faults()
        serial_rate, bulk_rate = len(serial) / serial_time, len(bulk) / bulk_time
        refs = {b["external_ref"] for b in serial_bodies + bulk_bodies}
        listed = [i for i in hook.iter_items(partner_id="P-ACME") if i["external_ref"] in refs]
        duplicates = len(listed) - len({i["external_ref"] for i in listed})
        print(f"(b) {args.bulk} creates per mode, {args.latency_ms} ms latency on every answer")
        print(f"    one at a time    : {serial_rate:8.1f} posts/s ({serial_time:.1f} s)")
        print(f"    bulk, {args.concurrency:2d} threads  : {bulk_rate:8.1f} posts/s ({bulk_time:.1f} s)")
        print(f"    ratio bulk/serial: {bulk_rate / serial_rate:8.2f}x  (target >= 8x)")
        print(f"    items found {len(listed)} for {len(refs)} refs, duplicates {duplicates}, "
              f"all created {all(c for _, c in serial + bulk)}\n")
        hook.close()

        # ---------------------------------------------------------------- (c) sandbox ceiling
        jobs = [("127.0.0.1", sbx.port, items_path, token, f"c-{tag}-{n}", args.ceiling_posts) for n in range(args.clients)]
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            start = time.perf_counter()
            results = pool.map(_ceiling_worker, jobs)
            wall = time.perf_counter() - start
        total = sum(ok for ok, _ in results)
        print(f"(c) sandbox ceiling: {args.clients} bare clients in parallel processes")
        print(f"    {total} creates in {wall:.1f} s = {total / wall:8.1f} creates/s "
              f"(single bare client in (a): {bare_rate:.1f}/s)")
        ok = hook_rate / bare_rate >= 0.8 and bulk_rate / serial_rate >= 8 and duplicates == 0 and len(listed) == len(refs)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        print("all targets met" if ok else "SOME TARGETS MISSED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
