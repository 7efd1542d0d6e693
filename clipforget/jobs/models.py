"""Old name of :mod:`clipforget.jobs.model_cache`, kept until ``clipforget/app/`` and ``jobs/worker.py`` import the
new one."""

from .model_cache import ModelCache

__all__ = ["ModelCache"]
