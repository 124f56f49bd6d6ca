"""Experiment harness: run directories, held-out evaluation, the benchmark matrix and its report."""
