#!/usr/bin/env bash
# The test suite, from a clean checkout: makes .venv, installs ara-spool with its test extras
# (a real Ara server from PyPI, gunicorn, ansible-core, pytest), checks style, runs pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k crash`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv .venv
    else
      echo "tests/run.sh: '$PY -m venv' failed; install your distribution's python3-venv package" >&2
      exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check .
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
