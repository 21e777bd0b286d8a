"""`python -m bench [NAME...]`: run the benchmark scripts in this folder one after another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))


def main(names: list[str]) -> int:
    chosen = [p for p in scripts() if not names or p.stem in names]
    unknown = set(names) - {p.stem for p in scripts()}
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
              f"available: {', '.join(p.stem for p in scripts())}", file=sys.stderr)
        return 2
    status = 0
    for script in chosen:
        print(f"\n== bench/{script.name} ==", flush=True)
        status |= subprocess.run([sys.executable, str(script)], check=False).returncode
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
