"""Old name of :mod:`clipforget.jobs.thread`, kept until ``clipforget/app/ui/render.py`` imports the new one."""

from .thread import STAGES, ThreadBackend

__all__ = ["STAGES", "ThreadBackend"]
