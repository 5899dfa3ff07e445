"""Checkout pipeline: frame sources, detection, tracking, matching, events, replay, edge service."""
