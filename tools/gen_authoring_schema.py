"""Generate the authoring schemas (config files as written, for editors) from
schemas/experiment.schema.json and schemas/megatron.schema.json.

    python tools/gen_authoring_schema.py          # rewrite schemas/*.authoring.schema.json
    python tools/gen_authoring_schema.py --check  # exit 1 if a committed one is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
sys.path.insert(0, str(ROOT))

from compiler.authoring import authoring_schemas  # noqa: E402


def generate() -> dict[Path, str]:
    def load(name: str) -> Any:
        return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))

    schemas = authoring_schemas(load("experiment.schema.json"), load("megatron.schema.json"))
    return {
        SCHEMAS / name: json.dumps(schema, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        for name, schema in schemas.items()
    }


def stale() -> list[Path]:
    return [
        path
        for path, text in generate().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed schema is stale"
    )
    options = parser.parse_args(argv)
    if options.check:
        old = stale()
        for path in old:
            print(
                f"{path.relative_to(ROOT)} is stale: run python tools/gen_authoring_schema.py",
                file=sys.stderr,
            )
        return 1 if old else 0
    for path, text in generate().items():
        path.write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
