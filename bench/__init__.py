"""Benchmarks: each module is a standalone script that prints its own table of figures and ratios."""
