"""The plan lockfile (`plan.lock.json`): the contract between the compiler and the reconciler.

One typed model (`model.py`) and one codec (`codec.py`: bytes, schema check, version). Both
halves import this package; it imports neither of them.
"""

from __future__ import annotations

from .codec import LOCK_NAME, VERSION, LockfileError, dumps, loads
from .model import ArrayGroup, Lock, LockJob, Project, RestartPolicy

__all__ = [
    "LOCK_NAME",
    "VERSION",
    "ArrayGroup",
    "Lock",
    "LockJob",
    "LockfileError",
    "Project",
    "RestartPolicy",
    "dumps",
    "loads",
]
