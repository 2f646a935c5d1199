#!/usr/bin/env bash
# The compiler tests under each given Python version, against a plain (non-editable) install
# in a venv of its own, so that the oldest supported and the newest Python are both exercised.
# A version that is not installed is an error, never a silent skip.
#
#   bash tests/smoke/python_versions.sh 3.10 3.13
#
# Interpreters are looked up as pythonX.Y on PATH, then in pyenv's versions folder
# (${PYENV_ROOT:-$HOME/.pyenv}/versions/X.Y.*), where this project's machines have them.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
(($#)) || { echo "usage: $0 X.Y [X.Y...]" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/oellm-pythons.XXXXXX")
trap 'rm -rf "$work"' EXIT

find_python() {
  local version=$1 found
  found=$(command -v "python$version" 2>/dev/null || true)
  # pyenv's shim exists for every installed version but fails for one not selected; ask it.
  if [ -n "$found" ] && "$found" -c 'pass' 2>/dev/null; then
    echo "$found"
    return
  fi
  for found in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version" \
    2>/dev/null | sort -V -r); do
    "$found" -c 'pass' 2>/dev/null && echo "$found" && return
  done
  return 1
}

# Installed from a copy, so that the builds leave no build/ folder in the repository (setuptools
# would copy its stale files into later wheels). The tests run in a second copy without the
# oellm/ folder: from the repository root, that folder would shadow the installed package.
copy() {
  mkdir -p "$2"
  tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=./output --exclude=./bundle \
    --exclude="$1" -cf - . | tar -C "$2" -xf -
}
copy ./.none "$work/src"
copy ./oellm "$work/tree"

# Every interpreter is found before any test runs, so a missing one fails at once.
declare -A pythons
for version in "$@"; do
  pythons[$version]=$(find_python "$version") || {
    echo "Python $version is not installed (no python$version on PATH, none in" \
      "${PYENV_ROOT:-$HOME/.pyenv}/versions): install it, e.g. pyenv install $version" >&2
    exit 1
  }
done

for version in "$@"; do
  echo "== Python $version (${pythons[$version]}): compiler tests on a plain install"
  venv="$work/venv-$version"
  "${pythons[$version]}" -m venv "$venv"
  "$venv/bin/pip" install --quiet "$work/src[test]"
  (
    cd "$work/tree"
    "$venv/bin/python" -c 'import oellm; assert "site-packages" in oellm.__file__, oellm.__file__'
    "$venv/bin/python" -m pytest tests/compiler -q -p no:cacheprovider
  )
done
