"""Write (or check) the service's OpenAPI document: ``python -m tseg.runtime.service.openapi [--check] [FILE]``.

The repository keeps it at ``docs/openapi.json`` for people and code generators (openapi-generator
makes C++, C# and Java clients from it); a test fails when it is not current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def render() -> str:
    """The document as the file holds it (sorted keys, two-space indent, final newline)."""
    from tseg.runtime.service.app import openapi_schema

    return json.dumps(openapi_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default="docs/openapi.json")
    parser.add_argument("--check", action="store_true", help="exit 1 if FILE is not current")
    args = parser.parse_args(argv)
    path = Path(args.file)
    text = render()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            sys.stderr.write(f"{path} is not current: run python -m tseg.runtime.service.openapi {path}\n")
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
