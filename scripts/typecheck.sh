#!/usr/bin/env bash
# Type-check the package with mypy (settings: [tool.mypy] in pyproject.toml).
# retail_reid.models, .gallery and .pipeline live in top-level folders (pyproject.toml's package-dir), which
# mypy cannot follow, so it checks a temporary tree of symlinks laid out as the installed package is.
# Extra arguments go to mypy.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/retail_reid"
for f in "$repo"/retail_reid/*; do
  [ "$(basename "$f")" = __pycache__ ] || ln -s "$f" "$tree/retail_reid/"
done
for p in models gallery pipeline; do
  ln -s "$repo/$p" "$tree/retail_reid/$p"
done
cd "$tree"
"$repo/.venv/bin/mypy" --config-file "$repo/pyproject.toml" --python-executable "$repo/.venv/bin/python" \
  --cache-dir "$repo/.mypy_cache" "$@" -p retail_reid
