#!/usr/bin/env python
"""Benchmark: our fetch path (include.intake.fetch.fetch_to_file over paramiko) vs OpenSSH's sftp.

Starts a real sshd (tests.support.sshd.start_sshd), writes one file of random data (compression
cannot cheat) into its chroot, then for each run fetches it once with our path and once with
``sftp -b`` (host key checked), alternating which goes first. Both timings include opening the
connection. Prints each run's MB/s, the medians, the ratio ours/sftp (target >= 0.5) and flags any
run of ours slower than 20 MB/s (paramiko's one-request-per-round-trip mode is ~5 MB/s).
The file is deleted at the end (the chroot is removed with the server).

    .venv/bin/python scripts/bench_large_fetch.py              # 1 GiB, 10 runs
    .venv/bin/python scripts/bench_large_fetch.py --size-mib 256 --runs 3
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SLOW_MB_S = 20.0
REMOTE = "/partners/acme/inbound/bench-large.bin"


def write_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = 4 << 20
    with open(path, "wb") as out:
        left = size
        while left:
            data = os.urandom(min(block, left))
            out.write(data)
            digest.update(data)
            left -= len(data)
    return digest.hexdigest()


def fetch_ours(server, local: Path, size: int, **kwargs) -> tuple[float, str]:
    from include.intake.fetch import fetch_to_file

    started = time.monotonic()
    sftp = server.sftp_client()
    try:
        result = fetch_to_file(sftp, REMOTE, local, expected_size=size, **kwargs)
    finally:
        sftp.close()
    return time.monotonic() - started, result.sha256


def fetch_openssh(server, local: Path) -> float:
    batch = local.with_suffix(".batch")
    batch.write_text(f"get {REMOTE} {local}\n")
    started = time.monotonic()
    subprocess.run(["sftp", "-q", *server.sftp_batch_args(), "-b", str(batch), f"{server.username}@{server.host}"],
                   check=True, capture_output=True, timeout=1800)
    elapsed = time.monotonic() - started
    batch.unlink()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--request-kib", type=int, default=None, help="our read request size (default: module default)")
    parser.add_argument("--max-requests", type=int, default=None, help="our requests in flight (default: module default)")
    args = parser.parse_args()

    from include.intake import fetch as fetch_mod
    from tests.support.sshd import start_sshd

    size = args.size_mib * 1024 * 1024
    kwargs = {}
    if args.request_kib:
        kwargs["request_size"] = args.request_kib * 1024
    if args.max_requests:
        kwargs["max_requests"] = args.max_requests
    print(f"file {args.size_mib} MiB random, {args.runs} runs; ours: request "
          f"{kwargs.get('request_size', fetch_mod.DEFAULT_REQUEST_SIZE) // 1024} KiB x "
          f"{kwargs.get('max_requests', fetch_mod.DEFAULT_MAX_REQUESTS)} in flight, TCP_NODELAY; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus", flush=True)
    ours_rates: list[float] = []
    sftp_rates: list[float] = []
    slow_runs: list[int] = []
    with start_sshd() as server, tempfile.TemporaryDirectory(prefix="tg-bench-") as tmp:
        source = server.local_path(REMOTE)
        started = time.monotonic()
        expected_sha = write_random_file(source, size)
        print(f"wrote {source} in {time.monotonic() - started:.1f}s", flush=True)
        probe = server.sftp_client()
        print(f"ours negotiates {probe.get_channel().get_transport().remote_cipher} "
              f"(the sftp_default connection settings)", flush=True)
        probe.close()
        try:
            for run in range(1, args.runs + 1):
                ours_local, sftp_local = Path(tmp) / "ours.bin", Path(tmp) / "sftp.bin"
                order = ("ours", "sftp") if run % 2 else ("sftp", "ours")
                timings = {}
                for which in order:
                    if which == "ours":
                        seconds, sha = fetch_ours(server, ours_local, size, **kwargs)
                        if sha != expected_sha:
                            raise SystemExit(f"run {run}: sha256 mismatch {sha} != {expected_sha}")
                        ours_local.unlink()
                    else:
                        seconds = fetch_openssh(server, sftp_local)
                        if sftp_local.stat().st_size != size:
                            raise SystemExit(f"run {run}: sftp fetched {sftp_local.stat().st_size} bytes")
                        sftp_local.unlink()
                    timings[which] = seconds
                ours_mb = size / 1e6 / timings["ours"]
                sftp_mb = size / 1e6 / timings["sftp"]
                ours_rates.append(ours_mb)
                sftp_rates.append(sftp_mb)
                flag = "  << SLOW (<20 MB/s)" if ours_mb < SLOW_MB_S else ""
                if flag:
                    slow_runs.append(run)
                print(f"run {run:2d} ({order[0]} first): ours {timings['ours']:6.2f}s {ours_mb:7.1f} MB/s | "
                      f"sftp {timings['sftp']:6.2f}s {sftp_mb:7.1f} MB/s | ratio {ours_mb / sftp_mb:4.2f}{flag}",
                      flush=True)
        finally:
            source.unlink(missing_ok=True)
    ours_median = statistics.median(ours_rates)
    sftp_median = statistics.median(sftp_rates)
    ratios = [o / s for o, s in zip(ours_rates, sftp_rates)]
    print(f"median ours {ours_median:.1f} MB/s (min {min(ours_rates):.1f}, max {max(ours_rates):.1f})")
    print(f"median sftp {sftp_median:.1f} MB/s (min {min(sftp_rates):.1f}, max {max(sftp_rates):.1f})")
    print(f"ratio of medians ours/sftp {ours_median / sftp_median:.2f} (target >= 0.5); "
          f"median of per-run ratios {statistics.median(ratios):.2f}")
    print(f"runs slower than {SLOW_MB_S:.0f} MB/s: {slow_runs or 'none'}")
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print("1 GiB file deleted" if args.size_mib == 1024 else "test file deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
