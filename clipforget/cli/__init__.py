"""The command line (``python -m clipforget``): one module per group of commands."""

from .main import main

__all__ = ["main"]
