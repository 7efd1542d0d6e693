"""The paper's settings (and the generic folder one), one module each, behind one registry.

Importing this package registers the built-in settings (the registry itself imports none of them).
"""

from . import cifar10, folders, living17, monkeys, style, subgroup  # noqa: F401  (importing registers them)
from .registry import SIZE_PRESETS, Setting, available_settings, get_setting, register_setting

__all__ = ["SIZE_PRESETS", "Setting", "available_settings", "get_setting", "register_setting"]
