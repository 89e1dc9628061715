"""P2: the document_delivery pipeline against a raw SFTP download of the same files, as a ratio.

1,000 small valid invoice files (100 per partner, 10 partners) go into a real OpenSSH sshd's partner
folders. Then, in one run of this script:

- **raw**: paramiko, one session, ``get`` of every file one after another (the floor: bytes over
  the wire, nothing else);
- **pipeline**: per partner, the DAG's task functions without a scheduler — list + readiness
  (ledger in PostgreSQL) → streamed fetch with sha256 over one session → validation of the partner's
  files together (include/checks/batch.py: one vectorised screen, the great-expectations reference
  path for anything it flags) → archive (rename on the server) → TG notifications in bulk mode
  against the sandbox over HTTP. ``--workers 1`` (default) runs the partners one after another;
  ``--workers N`` runs them in N processes, as Airflow runs the mapped task groups in parallel.

The ratio pipeline / raw is the figure (target ≤ 3×). The stages are timed separately too
(readiness, fetch, validate, moves, tg). One-off costs of a worker process (imports; the
great-expectations context) are paid before timing and reported on their own. Readiness uses
``stable_polls: 1`` and ``min_age_seconds: 0`` so no policy wait is counted as processing time.

    .venv/bin/python scripts/bench_pipeline.py [--files 1000] [--partners 10] [--rows 5] [--workers 1]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def partner_keys(n: int) -> list[str]:
    return [f"bench{i:02d}" for i in range(1, n + 1)]


def registry(keys: list[str]) -> dict:
    return {"partners": [{
        "key": key, "name": f"Bench partner {key}", "tg_partner_id": f"P-{key.upper()}",
        "folders": {role: f"/partners/{key}/{role}" for role in ("inbound", "outbound", "archive", "quarantine")},
        "document_types": [{"type": "invoice", "patterns": ["INV-*.csv"]}],
        "readiness": {"min_age_seconds": 0, "stable_polls": 1, "marker": "none"},
    } for key in keys]}


def sandbox_seed(keys: list[str]) -> dict:
    return {
        "tenant_id": "bench-tenant", "community_id": "bench-community", "admin_token": "bench-admin-token",
        "token_ttl_seconds": 3600, "attachment_max_bytes": 10 * 1024 * 1024,
        "partners": [{"id": f"P-{key.upper()}", "name": key} for key in keys],
        "clients": [{"client_id": "bench-enterprise", "client_secret": "bench-enterprise-secret",
                     "kind": "enterprise", "name": "Bench"}],
    }


def write_files(sshd, keys: list[str], files: int, rows: int, scratch: Path) -> list[str]:
    from tests.data.bad_inputs import make_valid_file

    remote_paths = []
    per_partner = files // len(keys)
    for p_index, key in enumerate(keys):
        inbound = sshd.local_path(f"/partners/{key}/inbound")
        for i in range(per_partner):
            seed = p_index * 100_000 + i
            src = make_valid_file(scratch, "invoice", rows=rows, name="tmp.csv", seed=seed)
            name = f"INV-{key}-{i:04d}.csv"
            os.replace(src, inbound / name)
            remote_paths.append(f"/partners/{key}/inbound/{name}")
    return remote_paths


def raw_download(sshd, remote_paths: list[str], target: Path) -> float:
    target.mkdir(parents=True, exist_ok=True)
    sftp = sshd.sftp_client()
    try:
        start = time.perf_counter()
        for i, remote in enumerate(remote_paths):
            sftp.get(remote, str(target / f"{i}.csv"))
        return time.perf_counter() - start
    finally:
        sftp.close()


def warm_checks(scratch: Path) -> float:
    from include.checks import validate_file
    from tests.data.bad_inputs import make_valid_file

    start = time.perf_counter()
    report = validate_file(make_valid_file(scratch, "invoice", rows=5, name="warm.csv"), "invoice")
    assert report.passed, report.summary_markdown()
    return time.perf_counter() - start


def run_partner(key: str, ctx) -> dict:
    """One partner's tasks as the mapped task group runs them (intake, then plan → bulk post → record).

    Stage seconds come from wrapping the functions those tasks call: readiness, fetch (incl. the
    ledger; validation taken out), validate, moves (archive/quarantine renames + ledger), tg (plan the
    posts, the bulk operator's post_items, record them).
    """
    from trading_grid.hooks.trading_grid import TradingGridHook

    from include import document_delivery as dd
    from include.document_delivery import intake as steps
    from include.exchange.run import open_run

    stages = {"readiness": 0.0, "fetch": 0.0, "validate": 0.0, "moves": 0.0, "tg": 0.0}
    timed = {"check_readiness": "readiness", "fetch_and_validate": "fetch", "validate": "validate",
             "move_files": "moves"}
    originals = {name: getattr(steps, name) for name in timed}

    def timing(name):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                stages[timed[name]] += time.perf_counter() - t
        return wrapper

    for name in timed:
        setattr(steps, name, timing(name))
    try:
        run = open_run(key, ctx)
        outcomes = steps.intake(run)
        t = time.perf_counter()
        with TradingGridHook() as hook:
            summary = dd.publish(run, outcomes, hook)
        stages["tg"] += time.perf_counter() - t
    finally:
        for name, original in originals.items():
            setattr(steps, name, original)
    stages["fetch"] -= stages["validate"]
    return {"key": key, "files": len(outcomes), "stages": stages, "notifications": len(summary["notifications"]),
            "created": summary["created"], "cases": len(summary["validation_cases"]) + len(summary["transfer_cases"])}


def _warm_worker() -> None:
    """Imports and first-use costs of a worker process (an Airflow worker pays them once, not per file)."""
    import include.checks.batch  # noqa: F401 - pandas and the checks
    import include.document_delivery  # noqa: F401
    import paramiko  # noqa: F401
    import trading_grid.hooks.trading_grid  # noqa: F401


def _settle(seconds: float) -> None:
    time.sleep(seconds)


def run_pipeline(keys: list[str], ctx, workers: int) -> dict:
    """All partners, one after another (``workers`` 1) or in ``workers`` processes like parallel mapped tasks."""
    totals = {"readiness": 0.0, "fetch": 0.0, "validate": 0.0, "moves": 0.0, "tg": 0.0}
    counts = {"notifications": 0, "created": 0, "cases": 0}

    def add(result: dict, start: float) -> None:
        for stage, seconds in result["stages"].items():
            totals[stage] += seconds
        for name in counts:
            counts[name] += result[name]
        print(f"  {result['key']}: {result['files']} files, at {time.perf_counter() - start:.1f} s, stages "
              + ", ".join(f"{k} {v:.2f}" for k, v in result["stages"].items()), flush=True)

    if workers <= 1:
        _warm_worker()
        start = time.perf_counter()
        for key in keys:
            add(run_partner(key, ctx), start)
        return {"seconds": time.perf_counter() - start, "stages": totals, **counts}

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_warm_worker) as pool:
        for done in [pool.submit(_settle, 1.0) for _ in range(workers)]:  # every worker started and warm
            done.result()
        start = time.perf_counter()
        futures = [pool.submit(run_partner, key, ctx) for key in keys]
        for future in as_completed(futures):
            add(future.result(), start)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "stages": totals, **counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--partners", type=int, default=10)
    parser.add_argument("--rows", type=int, default=5, help="data rows per file")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes running partners in parallel, as Airflow runs the mapped task "
                             "groups (1: one partner after another)")
    args = parser.parse_args()
    # `timeout` and friends send SIGTERM: exit through the ExitStack so sshd, sandbox and the
    # database are cleaned up instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import yaml

    from include.db import dispose_engines
    from include.document_delivery import RunContext
    from tests.support.postgres import create_database, drop_database
    from tests.support.sshd import start_sshd
    from tests.support.tg_sandbox import start_sandbox

    keys = partner_keys(args.partners)
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    db_url = create_database("bench_dd")
    with ExitStack() as stack:
        stack.callback(drop_database, db_url)
        stack.callback(dispose_engines)
        folders = [f"/partners/{k}/{r}" for k in keys for r in ("inbound", "outbound", "archive", "quarantine")]
        sshd = stack.enter_context(start_sshd(workdir / "sshd", partner_folders=folders))
        sandbox = stack.enter_context(start_sandbox(workdir / "sandbox", seed=sandbox_seed(keys)))
        registry_path = workdir / "partners.yaml"
        registry_path.write_text(yaml.safe_dump(registry(keys)))
        os.environ.update({
            "PARTNER_REGISTRY": str(registry_path),
            "EXCHANGE_DB_URL": db_url,
            "AIRFLOW_CONN_SFTP_DEFAULT": sshd.airflow_conn_json(),
            "AIRFLOW_CONN_TRADING_GRID_DEFAULT": sandbox.airflow_conn_json(),
        })
        remote_paths = write_files(sshd, keys, args.files, args.rows, workdir / "gen")
        total_bytes = sum(sshd.local_path(p).stat().st_size for p in remote_paths)
        print(f"{len(remote_paths)} files, {len(keys)} partners, {total_bytes / 1024:.0f} KiB "
              f"(median {statistics.median(sshd.local_path(p).stat().st_size for p in remote_paths):.0f} B/file)")

        warm = warm_checks(workdir / "warm")
        raw = raw_download(sshd, remote_paths, workdir / "raw")
        print(f"raw paramiko download: {raw:.2f} s; checks warm-up {warm:.2f} s", flush=True)
        ctx = RunContext(dag_id="document_delivery", run_id="bench__1", staging_root=str(workdir / "staging"), db_url=db_url,
                         registry_path=str(registry_path))
        pipe = run_pipeline(keys, ctx, args.workers)

        archived = sum(len(os.listdir(sshd.local_path(f"/partners/{k}/archive"))) for k in keys)
        assert archived == len(remote_paths), f"only {archived} of {len(remote_paths)} files archived"
        assert pipe["notifications"] == len(remote_paths) == pipe["created"], pipe

        ratio = pipe["seconds"] / raw
        st = pipe["stages"]
        # Stage seconds are summed over partners: "without validation" means something one at a time only.
        no_validation = pipe["seconds"] - st["validate"] if args.workers <= 1 else float("nan")
        print(f"raw paramiko download, one session, sequential get: {raw:7.2f} s "
              f"({len(remote_paths) / raw:.0f} files/s)")
        print(f"pipeline list→fetch→validate→archive→TG post:      {pipe['seconds']:7.2f} s "
              f"({len(remote_paths) / pipe['seconds']:.0f} files/s, {args.workers} worker process(es))")
        print("  stages (summed over partners): " + ", ".join(f"{k} {v:.2f} s" for k, v in st.items()))
        print(f"  checks warm-up before timing (GX import + context): {warm:.2f} s")
        print(f"ratio pipeline / raw: {ratio:.1f}x (target ≤ 3x); without validation: {no_validation / raw:.1f}x")
        print(json.dumps({"files": len(remote_paths), "workers": args.workers, "raw_s": round(raw, 3), "pipeline_s": round(pipe["seconds"], 3),
                          "ratio": round(ratio, 2), "ratio_without_validation": round(no_validation / raw, 2),
                          "stages_s": {k: round(v, 3) for k, v in st.items()}, "warmup_s": round(warm, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
