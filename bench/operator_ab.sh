#!/usr/bin/env bash
# `make bench-operator`, an older commit's operator against this checkout's,
# alternated ROUNDS times (default 3) on one machine:
#
#     bash bench/operator_ab.sh OLD_COMMIT [OUT_DIR]     (ROUNDS=3 SIZES=500 by default; SIZES=500,2000)
#
# KUBETUNE_VENV and KUBETUNE_TOOLS_BIN, when set, name an environment and
# cluster tools already installed (they are used as they are); otherwise
# hack/python-env.sh and hack/cluster-tools/build.sh make them.
#
# The old side runs from a detached worktree of OLD_COMMIT (its own copy of the
# benchmark, so that it applies its own CRD: an older operator refuses the
# fields a newer CRD defaults). Each side's operator package comes in through
# PYTHONPATH, which the benchmark's operator subprocess inherits; the path it
# imports is printed first in each side's output. Prints each run's row.
#
# OLD_PARTS (e.g. "operator/src trainer/contract/src crds/finetunejob.yaml
# crds/finetunesweep.yaml") runs the old operator on this checkout's harness and
# benchmark instead: the old side's tree is this commit with only those paths
# taken from OLD_COMMIT. Name CRD files, not crds/: the harness applies every
# CRD this commit has (kubetunepolicy.yaml too), and a path given is replaced whole. For a commit whose
# own harness differs (the pod runner before the real node), that keeps
# everything but the operator and its CRDs alike on both sides.
#
# Every run starts a control plane of its own (a run directory under OUT_DIR;
# its logs, the operator's included, are copied to OUT_DIR/<side>-<round>.logs
# before `down` deletes it) and stops it after: on a
# control plane that earlier runs have used, runs came out slower than on a
# fresh one, and whichever side ran first gained. Old goes first in odd
# rounds, new in even ones.
set -euo pipefail
old_commit=${1:?usage: bench/operator_ab.sh OLD_COMMIT [OUT_DIR]}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$(mktemp -d)}
rounds=${ROUNDS:-3}
sizes=${SIZES:-500}
venv=${KUBETUNE_VENV:-$("$here/hack/python-env.sh")}
KUBETUNE_TOOLS_BIN=${KUBETUNE_TOOLS_BIN:-$(bash "$here/hack/cluster-tools/build.sh")}
export KUBETUNE_TOOLS_BIN PATH="$venv/bin:$KUBETUNE_TOOLS_BIN:$PATH"
old_tree=$(mktemp -d)/old
if [ -n "${OLD_PARTS:-}" ]; then
  git -C "$here" worktree add -q --detach "$old_tree" HEAD
  # shellcheck disable=SC2086  # OLD_PARTS is a list of paths
  (cd "$old_tree" && git rm -q -r --cached $OLD_PARTS && rm -rf $OLD_PARTS && git checkout "$old_commit" -- $OLD_PARTS)
else
  git -C "$here" worktree add -q --detach "$old_tree" "$old_commit"
fi
trap 'git -C "$here" worktree remove --force "$old_tree"' EXIT
mkdir -p "$out"
echo "each run's output: $out"
for i in $(seq 1 "$rounds"); do
  sides="old new"; [ $((i % 2)) -eq 0 ] && sides="new old"
  for side in $sides; do
    if [ "$side" = old ]; then tree=$old_tree; else tree=$here; fi
    src=$tree/operator/src
    [ -d "$tree/trainer/contract/src" ] && src=$src:$tree/trainer/contract/src
    run_dir=$out/$side-$i.cluster
    (cd "$tree" && PYTHONPATH=$src python -c "import kubetune_operator; print('$side imports', kubetune_operator.__file__)" &&
     KUBETUNE_RUN_DIR=$run_dir PYTHONPATH=$src python bench/operator_bench.py --sizes "$sizes" --no-floor) > "$out/$side-$i.txt" 2>&1 || echo "FAILED" >> "$out/$side-$i.txt"
    cp -r "$run_dir/logs" "$out/$side-$i.logs" 2>/dev/null || true
    (cd "$tree" && python -m tests.harness.cluster down --run-dir "$run_dir") >> "$out/$side-$i.txt" 2>&1 || true
    echo "$side $i:"; grep -A9 '^    N ' "$out/$side-$i.txt" | grep -E '^ +[0-9]+ ' | head -"$(echo "$sizes" | tr ',' '\n' | wc -l)"
  done
done
