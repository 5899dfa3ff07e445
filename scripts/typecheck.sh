#!/usr/bin/env bash
# Type-check the package with mypy (settings: [tool.mypy] in pyproject.toml), in the tree of symlinks
# scripts/package-tree.sh lays out as the installed package is. Extra arguments go to mypy.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
exec "$repo/scripts/package-tree.sh" "$repo/.venv/bin/mypy" --config-file "$repo/pyproject.toml" \
  --python-executable "$repo/.venv/bin/python" --cache-dir "$repo/.mypy_cache" "$@" -p retail_reid
