"""`reid replay-batch`: a chain's recordings replayed on Ray workers, resumably, with a chain summary."""
