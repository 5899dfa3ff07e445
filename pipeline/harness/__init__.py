"""The scenario harness: synthetic checkout lanes and their scoring, for measuring the lane, never run by it.

Recorded lanes with labelled thefts are scarce, so the lane is measured on simulated ones. Nothing in
the lane, the edge, the console or the batch runs imports it (import-linter, pyproject.toml); it is a
development tool behind `reid simulate` and `reid score` and the benchmarks (benchmarks/), which import it
as installed.

| module | holds |
| --- | --- |
| `simulate` | `simulate`, `SimConfig`, `Truth`: a lane video, its POS log and truth.json from product photos |
| `simulate_pos` | `TillRates`, `PosCase`: what a till does besides scanning each item once |
| `score` | `read_truth`, `read_events`, `score`: events against the truth, per type and per pass |
| `bench_lanes` | the lane benchmarks' shared setup: work folder, gallery, seeded benchmark and development lanes |
| `offline_judging` | scanned passes of the development lanes judged again under other switch settings (the tuners) |
"""
