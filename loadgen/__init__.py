"""Scaleshop's load generator: seed, run, experiments (capacity, scale, cache, async) and reports."""
