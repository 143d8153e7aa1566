"""Runs every benchmark module in bench/ (bench_*.py) and prints name=value lines.

Each module has a ``main() -> None`` that prints its own figures, one ``name=value`` per line,
and says which baseline a ratio is against. A module that fails prints ``<module>.error=...``
and makes the run exit non-zero after the others have run.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = set(sys.argv[1:])
    failed = False
    sys.path.insert(0, str(HERE.parent))
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if only and name not in only:
            continue
        spec = importlib.util.spec_from_file_location(f"bench.{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        print(f"# {name}", flush=True)
        try:
            spec.loader.exec_module(module)
            module.main()
        except Exception as exc:  # one broken bench must not hide the others' figures
            failed = True
            traceback.print_exc()
            print(f"{name}.error={type(exc).__name__}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
