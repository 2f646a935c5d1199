#!/usr/bin/env bash
# mypy --strict on the package as it is installed: the top-level folders are mapped into the
# `oellm.*` namespace (pyproject.toml), which mypy cannot follow, so mirror that in a temp tree.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/oellm"
for f in "$repo"/oellm/*.py; do ln -s "$f" "$tree/oellm/"; done
for pkg in compiler reconciler container; do ln -s "$repo/$pkg" "$tree/oellm/$pkg"; done
cd "$tree"
"${MYPY:-mypy}" --config-file "$repo/pyproject.toml" --strict -p oellm
