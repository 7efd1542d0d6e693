"""Unlearning methods as plug-ins behind one signature: ``ours`` (the three stages) and the paper's baselines.

Importing this package registers the built-in methods (the registry itself imports none of them).
"""

from . import baselines, ours  # noqa: F401  (importing registers them)
from .registry import MethodOutput, MethodSpec, available_methods, get_method, register, seed_config

__all__ = ["MethodOutput", "MethodSpec", "available_methods", "get_method", "register", "seed_config"]
