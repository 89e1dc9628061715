"""Benchmark the Trading Grid hook against the sandbox, as ratios measured in one run.

Starts one sandbox (``start_sandbox`` in a temporary directory, SQLite), then prints:

(a) hook overhead: posts/s creating items through ``TradingGridHook.create_item`` vs a bare keep-alive
    ``http.client`` loop posting bodies of the same shape with precomputed keys (the cheapest client
    possible). Alternating rounds, so drift of the server (a growing database) hits both alike.
    Target: ratio >= 0.8.
(b) bulk mode: with 50 ms latency injected into every answer, ``create_items(max_concurrency=16)``
    (and 32) vs one ``create_item`` at a time, in interleaved halves. Target: >= 8x at 16 threads.
    Then checks that exactly one item exists per ref.
(c) the sandbox's own ceiling: creates/s with several bare ``http.client`` clients in parallel
    processes, so the other figures can be read against it.

Run: ``.venv/bin/python scripts/bench_trading_grid.py`` (about two minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import http.client
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
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 32], help="(b) bulk max_concurrency values")
    parser.add_argument("--clients", type=int, default=8, help="(c) parallel bare clients")
    parser.add_argument("--ceiling-posts", type=int, default=400, help="(c) posts per client")
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
        # Interleaved halves: the database grows during the run, and that must not favour one mode.
        sbx.set_faults(latency_ms=args.latency_ms)
        tag = uuid.uuid4().hex[:6]
        modes = [("serial", 1)] + [(f"bulk{c}", c) for c in args.concurrency]
        bodies = {name: payloads(f"b-{name}-{tag}", args.bulk) for name, _ in modes}
        elapsed = {name: 0.0 for name, _ in modes}
        results: dict[str, list] = {name: [] for name, _ in modes}
        half = args.bulk // 2
        for part in (slice(0, half), slice(half, args.bulk)):
            for name, concurrency in modes:
                start = time.perf_counter()
                if concurrency == 1:
                    results[name] += [hook.create_item(b) for b in bodies[name][part]]
                else:
                    results[name] += hook.create_items(bodies[name][part], max_concurrency=concurrency)
                elapsed[name] += time.perf_counter() - start
        sbx.clear_faults()
        rate = {name: len(results[name]) / elapsed[name] for name, _ in modes}
        refs = {b["external_ref"] for group in bodies.values() for b in group}
        listed = [i for i in hook.iter_items(partner_id="P-ACME") if i["external_ref"] in refs]
        duplicates = len(listed) - len({i["external_ref"] for i in listed})
        all_created = all(created for group in results.values() for _, created in group)
        print(f"(b) {args.bulk} creates per mode, {args.latency_ms} ms latency on every answer")
        print(f"    one at a time    : {rate['serial']:8.1f} posts/s ({elapsed['serial']:.1f} s)")
        for name, concurrency in modes[1:]:
            print(f"    bulk, {concurrency:2d} threads  : {rate[name]:8.1f} posts/s ({elapsed[name]:.1f} s)  "
                  f"ratio {rate[name] / rate['serial']:5.2f}x")
        first_bulk = modes[1][0]
        bulk_ratio = rate[first_bulk] / rate["serial"]
        print(f"    ratio bulk({modes[1][1]})/serial: {bulk_ratio:5.2f}x  (target >= 8x)")
        print(f"    items found {len(listed)} for {len(refs)} refs, duplicates {duplicates}, all created {all_created}\n")
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
        ok = hook_rate / bare_rate >= 0.8 and bulk_ratio >= 8 and duplicates == 0 and len(listed) == len(refs)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        print("all targets met" if ok else "SOME TARGETS MISSED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
