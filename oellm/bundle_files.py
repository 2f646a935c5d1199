"""The names of the files of a compiled bundle: the compiler writes them, the reconciler and
the commands read them. It imports nothing, so both halves may import it.
"""

from __future__ import annotations

LOCK_NAME = "plan.lock.json"  # the plan lockfile: the contract between the two halves
PLAN_NAME = "plan.txt"  # the plan for people (what `oellm plan` prints)
