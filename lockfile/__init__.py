"""The plan lockfile (`plan.lock.json`): the contract between the compiler and the reconciler.

One typed model (`model.py`, re-exported here), one writer (`writer.py`: the bytes and the
bundle id), one reader (`codec.py`: the version, the schema, the records) and one schema check
for both (`schema.py`); each imported from its module, as they load the schema validators.
Both halves import this package; it imports neither of them.
"""

from __future__ import annotations

from .model import ArrayGroup, Lock, LockJob, Project, RestartPolicy

__all__ = ["ArrayGroup", "Lock", "LockJob", "Project", "RestartPolicy"]
