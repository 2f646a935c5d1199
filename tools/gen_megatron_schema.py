"""Generate schemas/megatron.schema.json from the recorded Megatron-LM argument table.

The schema validates the `backend.megatron` map (dest -> value); its `x-megatron` annotations
tell compiler/megatron.py how to turn each value into command-line flags.

    python tools/gen_megatron_schema.py          # rewrite the schema
    python tools/gen_megatron_schema.py --check  # exit 1 if the committed schema is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# The mapping lives in the package, so that `oellm megatron-args` builds a fork's schema alike.
from oellm.compiler.megatron_table import TableError, build_schema, render

__all__ = ["TableError", "build_schema", "generate", "is_current", "render"]

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tools" / "megatron-args.json"
SCHEMA = ROOT / "schemas" / "megatron.schema.json"


def generate(table_path: Path = TABLE) -> str:
    return render(build_schema(json.loads(table_path.read_text(encoding="utf-8"))))


def is_current(table_path: Path = TABLE, schema_path: Path = SCHEMA) -> bool:
    if not schema_path.exists():
        return False
    return schema_path.read_text(encoding="utf-8") == generate(table_path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed schema is stale"
    )
    options = parser.parse_args(argv)
    if options.check:
        if is_current():
            return 0
        print(
            f"{SCHEMA.relative_to(ROOT)} is stale: run python tools/gen_megatron_schema.py",
            file=sys.stderr,
        )
        return 1
    SCHEMA.write_text(generate(), encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
