"""`make bench`: the benchmark ratios of issue 6, measured side by side on this machine."""
