#!/usr/bin/env bash
# mypy --strict on the package as it is installed: the top-level folders are mapped into the
# `oellm.*` namespace (pyproject.toml), which mypy cannot follow, so mirror that in a temp tree.
# The mapping is read from pyproject.toml's [tool.setuptools.package-dir], so a new folder or
# subpackage is checked without an edit here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/oellm"
for entry in "$repo"/oellm/*; do
  [ "$(basename "$entry")" = __pycache__ ] || ln -s "$entry" "$tree/oellm/"
done
# Lines such as `"oellm.compiler" = "compiler"` of the package-dir table.
mapped=$(awk '/^\[/ { inside = ($0 == "[tool.setuptools.package-dir]"); next }
  inside && /^"oellm\.[a-z_]+" *= *"[^"]+"/ { gsub(/[" ]/, ""); split($0, kv, "="); print kv[1], kv[2] }' \
  "$repo/pyproject.toml")
[ -n "$mapped" ] || { echo "typecheck: no oellm.* folders in pyproject.toml's package-dir" >&2; exit 2; }
while read -r package folder; do
  # Folders holding only data (schemas, templates, config) have nothing for mypy.
  if [ -n "$(find "$repo/$folder" -name '*.py' -not -name '__init__.py' -print -quit)" ]; then
    ln -s "$repo/$folder" "$tree/oellm/${package#oellm.}"
  fi
done <<<"$mapped"
cd "$tree"
"${MYPY:-mypy}" --config-file "$repo/pyproject.toml" --strict -p oellm
