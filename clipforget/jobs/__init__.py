"""Runs as jobs: a run spec (data), its profiles, the worker-side execution, and the queue that runs them."""
