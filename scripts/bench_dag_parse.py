"""P1: how long parsing each DAG file takes, and which heavy modules parsing drags in.

Each measurement runs in a fresh interpreter (nothing cached in memory; .pyc files are warmed by a
first throw-away run, as on a dag-processor that has parsed before). Figures per file:

- ``own``: the DAG file's own import, after ``airflow.sdk`` and Airflow's authoring machinery that
  every DAG uses (``@dag``/``@task``/``@task_group`` and the timetables) are already imported — the
  cost that the file and its ``include`` modules add (target ≤ 0.1 s);
- ``raw``: the same after only ``import airflow.sdk`` (includes Airflow's lazy imports of the
  decorators on first use);
- ``dagbag``: a ``DagBag`` over the single file, as the dag-processor does;
- ``heavy``: which of pandas / great_expectations / paramiko / asyncssh / sqlalchemy.orm / requests
  were imported by parsing (sqlalchemy itself is imported by airflow.sdk, so it is not listed).

Plus the whole dags/ folder in one DagBag. Medians of ``--repeat`` runs.

    .venv/bin/python scripts/bench_dag_parse.py [--repeat 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
HEAVY = ("pandas", "great_expectations", "paramiko", "asyncssh", "requests")
TARGET_SECONDS = 0.1

_PROBE = r"""
import json, os, sys, time
mode, path = sys.argv[1], sys.argv[2]
heavy = {heavy!r}
import airflow.sdk  # not measured: every DAG pays it
if mode == "own":
    from airflow.sdk import dag, task, task_group, CronTriggerTimetable, BaseSensorOperator  # noqa: F401
    import airflow.providers.standard.decorators.python  # @task's implementation, loaded lazily by Airflow
    @dag(schedule=None)
    def _warm():
        task(lambda: None, task_id="w")()
    _warm()
before = {{m for m in heavy if m in sys.modules}}
t0 = time.perf_counter()
if mode == "dagbag":
    from airflow.dag_processing.dagbag import DagBag
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=path)
    errors = {{k: str(v)[:300] for k, v in bag.import_errors.items()}}
    dags = sorted(bag.dags)
else:
    import runpy
    g = runpy.run_path(path, run_name="__dag_file__")
    errors = {{}}
    dags = []
elapsed = time.perf_counter() - t0
print(json.dumps({{"seconds": elapsed, "errors": errors, "dags": dags,
                  "heavy": sorted(m for m in heavy if m in sys.modules and m not in before)}}))
""".format(heavy=HEAVY)


def probe(mode: str, path: Path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]),
    }
    proc = subprocess.run([sys.executable, "-c", _PROBE, mode, str(path)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    if proc.returncode != 0:
        return {"seconds": float("nan"), "errors": {"probe": proc.stderr[-500:]}, "heavy": [], "dags": []}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(mode: str, path: Path, repeat: int) -> dict:
    probe(mode, path)  # warm .pyc files
    runs = [probe(mode, path) for _ in range(repeat)]
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "heavy": sorted({m for r in runs for m in r["heavy"]}),
        "errors": runs[-1]["errors"],
        "dags": runs[-1]["dags"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    files = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    results = {}
    ok = True
    print(f"{'file':32} {'own s':>8} {'raw s':>8} {'dagbag s':>9}  heavy imports")
    for path in files:
        row = {mode: measure(mode, path, args.repeat) for mode in ("own", "raw", "dagbag")}
        heavy = sorted(set(row["raw"]["heavy"]) | set(row["dagbag"]["heavy"]))
        errors = row["dagbag"]["errors"]
        results[path.name] = {"own": row["own"]["seconds"], "raw": row["raw"]["seconds"],
                              "dagbag": row["dagbag"]["seconds"], "heavy": heavy, "errors": errors,
                              "dags": row["dagbag"]["dags"]}
        flag = "" if row["own"]["seconds"] <= TARGET_SECONDS and not heavy and not errors else "  <-- over target"
        ok = ok and not flag
        print(f"{path.name:32} {row['own']['seconds']:8.3f} {row['raw']['seconds']:8.3f} "
              f"{row['dagbag']['seconds']:9.3f}  {', '.join(heavy) or '-'}{flag}")
        for name, err in errors.items():
            print(f"    import error {name}: {err}")
    folder = measure("dagbag", DAGS, args.repeat)
    results["<dags/>"] = {"dagbag": folder["seconds"], "heavy": folder["heavy"], "dags": folder["dags"],
                          "errors": folder["errors"]}
    print(f"{'all of dags/ (one DagBag)':32} {'':8} {'':8} {folder['seconds']:9.3f}  "
          f"{', '.join(folder['heavy']) or '-'}   {len(folder['dags'])} DAGs")
    print(f"target: own ≤ {TARGET_SECONDS:.2f} s per file, no pandas/great_expectations/paramiko/asyncssh at parse")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
