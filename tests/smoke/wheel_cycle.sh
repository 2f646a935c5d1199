#!/usr/bin/env bash
# The whole demo cycle as a new user runs it: build the wheel, install it (not editable) into a
# clean venv, and from a folder outside the repository compile, plan, check, reconcile on the
# local scheduler and on the real SLURM, show status, cancel a long job, diff two bundles and
# submit a prepared bundle by hand with sbatch. Needs the local SLURM (tests/slurm/cluster.sh up).
#
#   bash tests/smoke/wheel_cycle.sh [PYTHON]      (PYTHON: the interpreter of the venv; python3)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${1:-python3}
demo="$repo/config/experiments/demo.yaml"
work=$(mktemp -d "${TMPDIR:-/tmp}/oellm-wheel-cycle.XXXXXX")
unset OUTPUT_DIR  # the demo's output dir is then ./output beside each bundle
submitted=()      # SLURM jobs this script may leave behind if a step fails

cleanup() {
  if ((${#submitted[@]})); then scancel "${submitted[@]}" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== wheel cycle: %s\n' "$*"; }
fail() {
  printf 'wheel cycle FAILED: %s\n' "$*" >&2
  exit 1
}
# expect CODE CMD...: run CMD, show its output, and fail unless it exits with CODE.
expect() {
  local want=$1 got=0
  shift
  printf '$'
  printf ' %q' "$@"
  printf '\n'
  "$@" || got=$?
  ((got == want)) || fail "'$*' exited $got, expected $want"
}
# json_check FILE EXPR: EXPR (Python, over `data`) holds for the JSON in FILE.
json_check() {
  "$venv/bin/python" -c 'import json, sys
data = json.load(open(sys.argv[1]))
assert eval(sys.argv[2]), (sys.argv[2], data)' "$1" "$2" || fail "$1: expected $2"
}
# field_of DIR FIELD [OPTION...]: FIELD of the one job of DIR/bundle in `oellm status --json`.
field_of() {
  (cd "$1" && oellm status bundle --json "${@:3}") >"$work/status.json" || fail "status of $1"
  "$venv/bin/python" -c 'import json, sys
print(json.load(open(sys.argv[1]))["bundles"][0]["jobs"][0][sys.argv[2]])' \
    "$work/status.json" "$2"
}

step "build the wheel ($python)"
mkdir -p "$work/src"
# A copy, so that the build leaves nothing in the repository.
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude=./output --exclude=./bundle -cf - . |
  tar -C "$work/src" -xf -
venv="$work/venv"
"$python" -m venv "$venv"
# pip builds in an isolated environment of its own: the venv stays clean for the install.
"$venv/bin/pip" wheel --quiet --no-deps "$work/src" -w "$work/dist"
wheel=$(echo "$work"/dist/oellm-*.whl)
test -f "$wheel" || fail "no wheel was built"
echo "built $(basename "$wheel")"

step "install it into the clean venv"
"$venv/bin/pip" install --quiet "$wheel"
export PATH="$venv/bin:$PATH"
test "$(command -v oellm)" = "$venv/bin/oellm" || fail "oellm is not the venv's"
expect 0 oellm --version

step "local scheduler: compile, plan, compile --check, reconcile --wait"
mkdir -p "$work/local" && cd "$work/local"
expect 0 oellm compile "$demo" -o bundle
expect 0 oellm plan bundle
expect 0 oellm compile "$demo" -o bundle --check
expect 0 oellm reconcile bundle --wait --scheduler local --interval 1
grep -q "hello from demo" output/demo/slurm-*.log || fail "the local job's log lacks its output"
expect 0 oellm status bundle --scheduler local
test "$(field_of "$work/local" state --scheduler local)" = COMPLETED || fail "the local job is not completed"

step "SLURM: compile, reconcile --wait, status, status --json"
mkdir -p "$work/slurm" && cd "$work/slurm"
expect 0 oellm compile "$demo" -o bundle
expect 0 oellm reconcile bundle --wait --scheduler slurm --interval 2
grep -q "hello from demo" output/demo/slurm-*.log || fail "the SLURM job's log lacks its output"
expect 0 oellm status bundle
oellm status bundle --json >"$work/slurm.json" || fail "status --json"
json_check "$work/slurm.json" '(data["schema_version"] == 1 and
  [(j["job"], j["state"]) for j in data["bundles"][0]["jobs"]] == [("demo", "COMPLETED")])'

step "SLURM: cancel a long job"
mkdir -p "$work/cancel" && cd "$work/cancel"
expect 0 oellm compile "$demo" -o bundle "backend.bash.command=sleep 300"
expect 1 oellm reconcile bundle --scheduler slurm  # 1: it acted (submitted)
job_id=$(field_of "$work/cancel" job_id)
submitted+=("$job_id")
for _ in $(seq 60); do
  state=$(field_of "$work/cancel" state)
  [ "$state" = RUNNING ] && break
  sleep 1
done
[ "$state" = RUNNING ] || fail "the long job is $state, not running"
expect 1 oellm cancel bundle  # 1: it acted (cancelled)
expect 0 oellm status bundle
state=$(field_of "$work/cancel" state)
[ "$state" = CANCELLED ] || fail "after cancel the job is $state, not cancelled"
test -z "$(squeue -h -j "$job_id" -t PD,R 2>/dev/null)" || fail "job $job_id is still in squeue"

step "diff two bundles"
cd "$work"
expect 0 oellm diff local/bundle slurm/bundle  # the same demo: identical
expect 1 oellm diff local/bundle cancel/bundle # another command: different

step "by hand: prepare, then sbatch the script"
mkdir -p "$work/byhand" && cd "$work/byhand"
expect 0 oellm compile "$demo" -o bundle
expect 0 oellm prepare bundle
echo "\$ sbatch --wait bundle/jobs/demo.sbatch"
sbatch --wait bundle/jobs/demo.sbatch || fail "the job submitted by hand failed"
grep -q "hello from demo" output/demo/slurm-*.log || fail "the hand-submitted job's log lacks its output"

step "passed"
