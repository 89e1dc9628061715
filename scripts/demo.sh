#!/usr/bin/env bash
# The newcomer demo, one command: Airflow (standalone), the Trading Grid sandbox and an embedded SFTP
# server, all on embedded defaults, with sample partner files waiting to be delivered. See docs/demo.md.
#
#   bash scripts/demo.sh            start everything; Ctrl-C stops everything
#   bash scripts/demo.sh --check    start, run document_delivery once through the REST API, verify, stop
#
# This wrapper only makes sure .venv exists with requirements.txt installed; scripts/demo.py does the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ ! -x .venv/bin/python ]; then
  echo "demo: creating .venv (first run)" >&2
  python3 -m venv .venv
fi
# Reinstall only when requirements.txt changed since the last successful install (the stamp lives in
# .venv, so resetting the demo with rm -rf var/ does not reinstall).
stamp=.venv/.demo-requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "demo: installing requirements.txt into .venv (this takes a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

export PATH="$repo/.venv/bin:$PATH"
export PYTHONPATH="$repo:$repo/plugins${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python scripts/demo.py "$@"
