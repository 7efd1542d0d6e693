"""Experiments over the pipeline: benchmarks (methods x seeds on a setting), ablations and merging."""
