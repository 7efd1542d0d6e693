"""Old name of :mod:`clipforget.jobs.registry`, kept until ``clipforget/app/service.py`` imports the new one."""

from .registry import BACKENDS, create_backend

__all__ = ["BACKENDS", "create_backend"]
