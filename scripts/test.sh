#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (Debian's
# openssh-server for the real sshd, chromium for the partner-page test, the Python packages
# into .venv), makes sure PostgreSQL is up, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

need_apt=()
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing Debian packages: ${need_apt[*]} (run as root or install them)" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements-test.txt

# PostgreSQL and Redis are started before a session here; start them if they are not.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi

export PATH="$repo/.venv/bin:$PATH"
export PYTHONPATH="$repo:$repo/plugins${PYTHONPATH:+:$PYTHONPATH}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
exec .venv/bin/python -m pytest "$@"
