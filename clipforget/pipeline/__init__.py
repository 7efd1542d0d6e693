"""Running a method end to end (:func:`run_method`) and the run folder it writes (:class:`RunFolder`)."""

from .folder import RunFolder
from .run import RunResult, run_method

__all__ = ["RunFolder", "RunResult", "run_method"]
