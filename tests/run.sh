#!/usr/bin/env bash
# The whole test suite, from a clean checkout, in any directory: makes .venv, installs ara-spool
# with its test extras (a real Ara server from PyPI, gunicorn, ansible-core, pytest), checks style,
# runs pytest. Extra arguments go to pytest, e.g. `bash tests/run.sh -k crash`.
#
# System packages the tests use: Debian's chromium (tests/test_browser.py opens Ara's web UI in it)
# and systemd (systemd-analyze checks the units in systemd/). Run as root on Debian/Ubuntu, this
# script installs them when missing. Otherwise it says what is missing, and the tests that need it
# FAIL with the command to install it (ARA_SPOOL_NO_BROWSER=1 skips the browser tests on purpose).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_updated=0
apt_install() {
  [ "$apt_updated" = 1 ] || { apt-get update -qq && apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing=()
if [ "${ARA_SPOOL_NO_BROWSER:-0}" != 1 ] && [ -z "${ARA_SPOOL_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  missing+=(chromium)
fi
command -v systemd-analyze >/dev/null || missing+=(systemd)
if [ "${#missing[@]}" -gt 0 ]; then
  if can_apt; then
    echo "tests/run.sh: installing Debian packages the tests need: ${missing[*]} (about 30 s)" >&2
    apt_install "${missing[@]}" || echo "tests/run.sh: apt-get install ${missing[*]} failed; the tests that need them will fail" >&2
  else
    echo "tests/run.sh: not installed: ${missing[*]}; the tests that need them will fail." >&2
    echo "  install them first: sudo apt-get install -y ${missing[*]}" >&2
    case " ${missing[*]} " in *" chromium "*) echo "  (or ARA_SPOOL_NO_BROWSER=1 to skip the browser tests)" >&2 ;; esac
  fi
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if can_apt; then
      apt_install python3-venv
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
