"""The research recipes: training and evaluation that the shipped embedder was not made with.

The class-disjoint evaluation (SKUs held out of training, in folds) and the recipes on a frozen
backbone's cached features: `reid train-tail`, `reid train --fold` and the benchmarks run them; the
shipped training path (`reid train`, `interpolate`, `export`, `compose`, `train-lane-head`) never
imports them (import-linter, pyproject.toml).

| module | holds |
| --- | --- |
| `folds` | `Folds`, `make_folds`, `read_folds`: the SKUs split into folds, coarse kinds whole |
| `disjoint` | `embed_data`, `fold_report`, `pool`: an ONNX embedder judged on held-out SKUs |
| `feature_cache` | `FeatureCache`, `build_cache`: a frozen backbone's features of augmented views |
| `tail_train` | `Recipe`, `train_on_cache`: a projection (and tail stages) trained from the cache |
"""
