#!/usr/bin/env bash
# Run a command in a temporary tree of symlinks laid out as the installed package is: retail_reid.models,
# .gallery and .pipeline live in top-level folders (pyproject.toml's package-dir), which mypy and
# import-linter cannot follow. The command runs in the tree, with it first on PYTHONPATH; REPO names the
# repository. Used by scripts/typecheck.sh and scripts/lint-imports.sh.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export REPO
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/retail_reid"
for f in "$REPO"/retail_reid/*; do
  [ "$(basename "$f")" = __pycache__ ] || ln -s "$f" "$tree/retail_reid/"
done
for p in models gallery pipeline; do
  ln -s "$REPO/$p" "$tree/retail_reid/$p"
done
cd "$tree"
PYTHONPATH="$tree${PYTHONPATH:+:$PYTHONPATH}" "$@"
