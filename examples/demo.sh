#!/usr/bin/env bash
# The ara-spool demo, from a fresh checkout: needs only Python 3.11+ (and, on Debian, the
# python3-venv package, which it installs itself when run as root).
#
#   bash examples/demo.sh          set up .venv, start a local Ara, record the example playbook
#   bash examples/demo.sh stop     stop the demo's Ara
#
# It creates .venv (if missing) with ara-spool, ara[server], gunicorn and ansible-core; starts Ara
# (sqlite, under .demo/ in the repository, gunicorn on 127.0.0.1:${ARA_DEMO_PORT:-8000}) and leaves
# it running; records examples/github_collection_flow.yml with ara-spool; then prints the Ara page
# of the run, `ara-spool status` and `ara result list`, and how to point `ara-spool` and Ara's own
# `ara` CLI at this Ara and spool (the spool is .demo/spool). Running it again reuses all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/.demo
PIDFILE=$DEMO/ara.pid
PORTFILE=$DEMO/ara.port
LOG=$DEMO/ara.log
PY=${PYTHON:-python3}
VENV=$ROOT/.venv
BIN=$VENV/bin

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

ara_pid() {  # the demo's gunicorn, if it is running
  local pid
  [ -s "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q gunicorn "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

stop() {
  local pid
  if pid=$(ara_pid); then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "demo Ara stopped (pid $pid)"
  else
    echo "demo Ara is not running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  stop) stop; exit 0 ;;
  ""|run) ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (use: bash examples/demo.sh [stop])" ;;
esac

# --- 1. Python environment -------------------------------------------------------------------
command -v "$PY" >/dev/null || die "$PY not found; install Python 3.11 or newer"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "ara-spool needs Python >= 3.11; $PY is $("$PY" -V 2>&1) (PYTHON=python3.12 bash examples/demo.sh picks another)"
if [ ! -x "$BIN/python" ]; then
  say "Creating $VENV"
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing Debian's python3-venv"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv "$VENV"
    else
      die "'$PY -m venv' failed; install your distribution's python3-venv package (sudo apt-get install python3-venv)"
    fi
  fi
fi
need_install=0
for tool in ara-spool ara ara-manage gunicorn ansible-playbook; do
  [ -x "$BIN/$tool" ] || need_install=1
done
if [ "$need_install" = 1 ] || [ "${ARA_DEMO_REINSTALL:-0}" = 1 ]; then
  say "Installing ara-spool (editable), ara[server] 1.8.0, gunicorn and ansible-core into .venv"
  mkdir -p "$DEMO"
  echo "(pip's output goes to $DEMO/pip.log; this takes a minute the first time)"
  if ! { "$BIN/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$BIN/python" -m pip install --disable-pip-version-check -e . 'ara[server]==1.8.0' gunicorn ansible-core
       } >"$DEMO/pip.log" 2>&1; then
    tail -25 "$DEMO/pip.log" >&2
    die "pip install failed (full log: $DEMO/pip.log)"
  fi
fi
export PATH="$BIN:$PATH"

# --- 2. A local Ara (sqlite under .demo/, gunicorn on 127.0.0.1) --------------------------------
mkdir -p "$DEMO"
export ARA_BASE_DIR=$DEMO/ara
export ARA_DATABASE_OPTIONS='@json {"transaction_mode": "IMMEDIATE", "timeout": 20}'
export ARA_ALLOWED_HOSTS='["127.0.0.1", "localhost"]'
export ARA_DEBUG=false

port_busy() {  # is something listening on 127.0.0.1:$1 ?
  "$BIN/python" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

answers() {  # is Ara's API answering on 127.0.0.1:$1 ?
  "$BIN/python" - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v1/", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

if pid=$(ara_pid) && [ -s "$PORTFILE" ] && answers "$(cat "$PORTFILE")" &&
   { [ -z "${ARA_DEMO_PORT:-}" ] || [ "$ARA_DEMO_PORT" = "$(cat "$PORTFILE")" ]; }; then
  PORT=$(cat "$PORTFILE")
  say "Ara is already running (pid $pid) on http://127.0.0.1:$PORT"
else
  PORT=${ARA_DEMO_PORT:-8000}
  if port_busy "$PORT"; then
    if [ -n "${ARA_DEMO_PORT:-}" ]; then
      die "port $PORT (ARA_DEMO_PORT) is in use on 127.0.0.1; choose another: ARA_DEMO_PORT=8123 bash examples/demo.sh"
    fi
    PORT=$("$BIN/python" - <<'EOF'
import socket
for port in [*range(8001, 8100), 0]:  # the first free port after 8000, else any free port
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
EOF
)
    echo "NOTE: port 8000 is in use on 127.0.0.1; the demo's Ara uses port $PORT instead"
    echo "      (set ARA_DEMO_PORT to pick one)."
  fi
  if [ -n "${pid:-}" ]; then
    echo "stopping the demo's earlier Ara (pid $pid, port $(cat "$PORTFILE" 2>/dev/null || echo '?'))"
    stop >/dev/null
  fi
  say "Starting Ara on http://127.0.0.1:$PORT (data in $ARA_BASE_DIR, log in $LOG)"
  ara-manage migrate >>"$LOG" 2>&1 || { tail -20 "$LOG" >&2; die "ara-manage migrate failed (log: $LOG)"; }
  gunicorn --daemon --pid "$PIDFILE" --workers 2 --bind "127.0.0.1:$PORT" --graceful-timeout 2 \
    --error-logfile "$LOG" ara.server.wsgi:application
  echo "$PORT" >"$PORTFILE"
  for _ in $(seq 150); do answers "$PORT" && break; sleep 0.2; done
  answers "$PORT" || { tail -20 "$LOG" >&2; die "Ara did not start on port $PORT (log: $LOG)"; }
  echo "Ara is up (pid $(cat "$PIDFILE"))"
fi
SERVER=http://127.0.0.1:$PORT

# --- 3. Record the example playbook with ara-spool ------------------------------------------
export ARA_API_SERVER=$SERVER
export ARA_SPOOL_DIR=$DEMO/spool          # the demo's own spool; the default is ~/.local/state/ara-spool
mkdir -p -m 0700 "$ARA_SPOOL_DIR"
exports=$(ara-spool env)                    # the callback, the action plugin and the role
eval "$exports"                             # (interactively: eval "$(ara-spool env)")
RUN_ID=demo-$(date -u +%Y%m%dT%H%M%SZ)-$$
say "Recording examples/github_collection_flow.yml as run $RUN_ID"
echo "(on purpose, one task fails with ignore_errors and one PR check records 'failed': Ara shows both)"
echo "\$ eval \"\$(ara-spool env)\""
echo "\$ ansible-playbook -i examples/inventory.ini examples/github_collection_flow.yml -e ara_enabled=true -e ara_run_id=$RUN_ID"
start=$(date +%s.%N)
rc=0
ansible-playbook -i examples/inventory.ini examples/github_collection_flow.yml \
  -e ara_enabled=true -e "ara_run_id=$RUN_ID" || rc=$?
secs=$("$BIN/python" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")
echo "ansible-playbook exited $rc after ${secs}s"

# --- 4. What Ara holds now --------------------------------------------------------------------
export ARA_API_CLIENT=http                 # for Ara's own `ara` CLI
PLAYBOOK_ID=$(ara playbook list --label "run_id:$RUN_ID" -f value -c id | head -1)
say "ara-spool status --run $RUN_ID"
ara-spool status --run "$RUN_ID"
COLS="-c id -c status -c task -c host -c started -c duration"
if [ -n "$PLAYBOOK_ID" ]; then
  say "ara result list --playbook $PLAYBOOK_ID --resolve --order started"
  ara result list --playbook "$PLAYBOOK_ID" --resolve --order started --limit 1000 $COLS
  say "ara result list --playbook $PLAYBOOK_ID --resolve --ignore-errors   (Ara lists these apart)"
  ara result list --playbook "$PLAYBOOK_ID" --resolve --ignore-errors $COLS
fi

say "Done"
if [ -n "$PLAYBOOK_ID" ]; then
  echo "The recorded run in Ara's web UI:  $SERVER/playbooks/$PLAYBOOK_ID.html"
else
  echo "Ara has no playbook for run $RUN_ID yet: see 'ara-spool status' above (the spool is kept)."
fi
echo "All runs:                          $SERVER/"
echo
echo "Ara keeps running (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'), log $LOG). Stop it with:"
echo "  bash examples/demo.sh stop"
echo "The demo's spool is $ARA_SPOOL_DIR (ara-spool reads ARA_SPOOL_DIR; without it,"
echo "\$XDG_STATE_HOME/ara-spool or ~/.local/state/ara-spool), so export it to see the demo's runs."
echo
echo "Try it yourself in this shell:"
echo "  source .venv/bin/activate && eval \"\$(ara-spool env)\""
echo "  export ARA_API_SERVER=$SERVER ARA_SPOOL_DIR=$ARA_SPOOL_DIR"
echo "  ansible-playbook -i examples/inventory.ini examples/github_collection_flow.yml -e ara_enabled=true"
echo "  ara-spool status"
echo "Ara's own CLI talks to this server only with ARA_API_CLIENT=http (without it, it opens a local"
echo "database under ~/.ara and fails):"
echo "  export ARA_API_CLIENT=http ARA_API_SERVER=$SERVER"
echo "  ara playbook list"
echo "  ara result list --playbook ID --resolve                   # ignored results are left out:"
echo "  ara result list --playbook ID --resolve --ignore-errors   # ... these are they"
exit "$rc"
