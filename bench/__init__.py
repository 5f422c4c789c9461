"""Benchmarks that print JSON figures, measured as side-by-side ratios in one run. Not part of the test run."""
