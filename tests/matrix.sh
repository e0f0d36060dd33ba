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
# The test extras, without the two packages the matrix varies.
mapfile -t TEST_DEPS < <("$PY" - <<'PYEOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]
print("\n".join(d for d in deps if not d.replace("_", "-").lower().startswith(("ara[", "ara=", "ansible-core"))))
PYEOF
)
failed=0
for entry in $MATRIX; do
  case "$entry" in
    ansible-*) pins=("ansible-core==${entry#ansible-}.*" "ara[server]==1.8.0"); marker=ansible_matrix ;;
    ara-*) pins=("ara[server]==${entry#ara-}.*" "ansible-core"); marker=ara_matrix ;;
    *) echo "tests/matrix.sh: unknown entry '$entry' (ansible-X.Y or ara-X.Y)" >&2; exit 2 ;;
  esac
  venv=.venv-matrix/$entry
  start=$(date +%s)
  echo "== $entry: ${pins[*]} (pytest -m $marker)" >&2
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e . "${TEST_DEPS[@]}" "${pins[@]}"; then
    echo "$entry: pip could not install ${pins[*]} on $("$PY" -V)" | tee -a "$SUMMARY" >&2
    failed=1
    continue
  fi
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
  line="$entry: $versions: ${result:-pytest exited $rc} ($(( $(date +%s) - start )) s with the install)"
  echo "$line" | tee -a "$SUMMARY" >&2
  if [ "$rc" != 0 ]; then
    failed=1
    tail -30 "tests/artifacts/matrix-$entry.log" >&2
  fi
done
echo "matrix summary (also in $SUMMARY):" >&2
cat "$SUMMARY" >&2
exit "$failed"
