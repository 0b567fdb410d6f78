#!/usr/bin/env bash
# hack/stress-suite.sh [RUNS] [PYTEST ARGS...]: run tests (default: tests/cluster
# tests/trainer) RUNS times in a row (default 3) with a CPU hog busy on one core
# all along, and print each run's wall time and result. The hog is started and
# stopped here: stress-ng when Debian's is installed, else a shell busy loop.
# A test that only passes on an idle machine fails here.
#
# PYTEST overrides how pytest runs (default: `bash hack/test.sh`, which installs
# what is missing first, as `make test` does; a developer sharing a prepared
# environment passes e.g. PYTEST="python -m pytest").
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
shift || true
[ "$#" -gt 0 ] || set -- tests/cluster tests/trainer
pytest_cmd=${PYTEST:-bash hack/test.sh}

hog_pid=
start_hog() {
  # One busy core: pinned to the last CPU when taskset is there, so it is one core, not one core's worth.
  local pin=()
  command -v taskset >/dev/null && pin=(taskset -c "$(($(nproc) - 1))")
  if command -v stress-ng >/dev/null; then
    setsid "${pin[@]}" stress-ng --cpu 1 --cpu-method loop --quiet >/dev/null 2>&1 &
  else
    setsid "${pin[@]}" bash -c 'while :; do :; done' >/dev/null 2>&1 &
  fi
  hog_pid=$!
}
stop_hog() {
  if [ -n "$hog_pid" ]; then
    kill -- -"$hog_pid" 2>/dev/null || kill "$hog_pid" 2>/dev/null
    wait "$hog_pid" 2>/dev/null
    hog_pid=
  fi
}
trap stop_hog EXIT INT TERM

failed=0
results=()
for i in $(seq 1 "$runs"); do
  start_hog
  echo "[stress] run $i/$runs: $pytest_cmd $* (CPU hog pid $hog_pid on one core)"
  started=$(date +%s)
  $pytest_cmd "$@" -p no:cacheprovider
  code=$?
  seconds=$(($(date +%s) - started))
  stop_hog
  verdict=$([ "$code" -eq 0 ] && echo passed || echo "FAILED (exit $code)")
  [ "$code" -eq 0 ] || failed=1
  results+=("run $i: ${seconds}s, $verdict")
  echo "[stress] run $i/$runs: ${seconds}s, $verdict"
done
echo "[stress] summary ($*, CPU hog on one core):"
printf '  %s\n' "${results[@]}"
exit "$failed"
