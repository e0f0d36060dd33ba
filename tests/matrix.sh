#!/usr/bin/env bash
# The version matrix: the tests marked `ansible_matrix` under each older ansible-core, and those
# marked `ara_matrix` against the older Ara server, each in its own venv under .venv-matrix/.
# The main suite (tests/run.sh) covers the newest: ansible-core 2.19 and Ara 1.8.0. CI (.ci/run)
# runs this after it; alone: `bash tests/matrix.sh [pytest args]`. ARA_SPOOL_MATRIX picks entries,
# e.g. ARA_SPOOL_MATRIX="ansible-2.16 ara-1.7". Prints one line per entry and exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MATRIX=${ARA_SPOOL_MATRIX:-"ansible-2.16 ansible-2.17 ansible-2.18 ara-1.7"}
mkdir -p .venv-matrix tests/artifacts
SUMMARY=tests/artifacts/matrix.txt
: >"$SUMMARY"
# ara-spool's dependencies and test extras, without the two packages the matrix varies.
mapfile -t DEPS < <("$PY" - <<'PYEOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"]["test"]
print("\n".join(d for d in deps if not d.replace("_", "-").lower().startswith(("ara[", "ara=", "ansible-core"))))
PYEOF
)
pins_of() {  # the packages an entry pins, one a line
  case "$1" in
    ansible-*) printf '%s\n' "ansible-core==${1#ansible-}.*" "ara[server]==1.8.0" ;;
    ara-*) printf '%s\n' "ara[server]==${1#ara-}.*" "ansible-core" ;;
    *) echo "tests/matrix.sh: unknown entry '$1' (ansible-X.Y or ara-X.Y)" >&2; return 2 ;;
  esac
}
install_deps() {  # make the entry's venv and install the dependencies into it
  local venv=.venv-matrix/$1 pins
  mapfile -t pins < <(pins_of "$1")
  { [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"; } &&
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile "${DEPS[@]}" "${pins[@]}"
}

# The dependencies are installed side by side (pip mostly waits on the disk); ara-spool itself
# then one venv at a time (an editable build writes into the checkout); then the tests, one by one.
start=$(date +%s)
declare -A installer
for entry in $MATRIX; do
  pins_of "$entry" >/dev/null || exit 2
  install_deps "$entry" >"tests/artifacts/matrix-$entry.pip.log" 2>&1 &
  installer[$entry]=$!
done
failed=0
declare -A installed
for entry in $MATRIX; do
  if wait "${installer[$entry]}" && .venv-matrix/"$entry"/bin/python -m pip install -q --disable-pip-version-check \
       --no-deps -e . >>"tests/artifacts/matrix-$entry.pip.log" 2>&1; then
    installed[$entry]=1
  else
    echo "$entry: pip could not install $(pins_of "$entry" | xargs) on $("$PY" -V)" | tee -a "$SUMMARY" >&2
    tail -20 "tests/artifacts/matrix-$entry.pip.log" >&2
    failed=1
  fi
done
echo "tests/matrix.sh: venvs ready in $(( $(date +%s) - start )) s" >&2

for entry in $MATRIX; do
  [ -n "${installed[$entry]:-}" ] || continue
  case "$entry" in ansible-*) marker=ansible_matrix ;; *) marker=ara_matrix ;; esac
  venv=.venv-matrix/$entry
  start=$(date +%s)
  echo "== $entry: $(pins_of "$entry" | xargs) (pytest -m $marker)" >&2
  versions=$("$venv/bin/python" - <<'PYEOF'
import importlib.metadata as m, platform
print(f"Python {platform.python_version()}, ansible-core {m.version('ansible-core')}, ara {m.version('ara')}, "
      f"Django {m.version('django')}")
PYEOF
)
  rc=0
  PATH="$PWD/$venv/bin:$PATH" "$venv/bin/pytest" -q -p no:cacheprovider -m "$marker" "$@" \
    >"tests/artifacts/matrix-$entry.log" 2>&1 || rc=$?
  result=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error).* in ' "tests/artifacts/matrix-$entry.log" | tail -1 |
           sed 's/=//g; s/^ *//; s/ *$//')
  line="$entry: $versions: ${result:-pytest exited $rc}"
  echo "$line" | tee -a "$SUMMARY" >&2
  if [ "$rc" != 0 ]; then
    failed=1
    tail -30 "tests/artifacts/matrix-$entry.log" >&2
  fi
done
echo "matrix summary (also in $SUMMARY):" >&2
cat "$SUMMARY" >&2
exit "$failed"
