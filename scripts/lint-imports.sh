#!/usr/bin/env bash
# Check the layers with import-linter (contracts: [tool.importlinter] in pyproject.toml; README.md, "Layers"),
# in the tree of symlinks scripts/package-tree.sh lays out as the installed package is.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
exec "$repo/scripts/package-tree.sh" "$repo/.venv/bin/lint-imports" --no-cache "$repo/pyproject.toml" "$@"
