"""Every error clipforget raises on purpose: one base class, so the CLI and the app report them all the same way."""

from __future__ import annotations


class ClipforgetError(Exception):
    """An error whose message is meant for the user (it says what is wrong and what to do)."""


class DataError(ClipforgetError, ValueError):
    """Input data is missing or unusable; the message says what and where."""


class ModelLoadError(ClipforgetError, RuntimeError):
    """A model spec could not be turned into a model; the message says what to do."""


class WeightsNotFoundError(ModelLoadError):
    """Pretrained weights are not on this machine (and nothing is downloaded at run time)."""


class IndexLoadError(ClipforgetError, RuntimeError):
    """An index folder is missing or inconsistent; the message says which file."""


class RunCancelled(ClipforgetError, RuntimeError):
    """The user cancelled the run; nothing half-done was written."""
