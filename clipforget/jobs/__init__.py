"""Runs as jobs: a run spec (data), its profiles, the worker side (``execute``, ``Job``) and the backends that run
them -- worker processes over a queue folder (``local``), Ray actors (``ray``), a thread (``thread``)."""
