"""The plan lockfile (`plan.lock.json`): the contract between the compiler and the reconciler.

One typed model (`model.py`, re-exported here) and one codec (`codec.py`: the bytes, the
version and the schema check; imported from there, as it loads the schema validators). Both
halves import this package; it imports neither of them.
"""

from __future__ import annotations

from .model import ArrayGroup, Lock, LockJob, Project, RestartPolicy

__all__ = ["ArrayGroup", "Lock", "LockJob", "Project", "RestartPolicy"]
