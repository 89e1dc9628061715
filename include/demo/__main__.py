"""Act as the demo's partners on the SFTP side.

``python -m include.demo samples``   drop another round of sample deliveries into every inbound folder
``python -m include.demo correct``   re-send each quarantined demo file, corrected, under its original name
"""
from __future__ import annotations

import argparse
from pathlib import Path

from include.demo.samples import correct_quarantined, create_partner_folders, drop_samples

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m include.demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    samples = sub.add_parser("samples", help="write sample files into every partner's inbound folder")
    samples.add_argument("--good-only", action="store_true", help="no bad files this time")
    correct = sub.add_parser("correct", help="send corrected versions of the quarantined demo files")
    for command in (samples, correct):
        command.add_argument("--root", type=Path, default=REPO / "var" / "sftp-root", help="the SFTP server's root")
    args = parser.parse_args(argv)

    create_partner_folders(args.root)
    if args.command == "samples":
        dropped = drop_samples(args.root, bad=not args.good_only)
    else:
        dropped = correct_quarantined(args.root)
        if not dropped:
            print("nothing to correct: no demo file in any quarantine folder")
    for sample in dropped:
        verdict = "should pass" if sample.expected_reason is None else f"should fail: {sample.expected_reason}"
        print(f"{sample.partner:<8} {sample.doc_type:<24} {sample.remote_path}  ({verdict})")


if __name__ == "__main__":
    main()
