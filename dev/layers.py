"""`python -m dev.layers`: import-linter's contracts (pyproject's `[tool.importlinter]`).

import-linter finds a package's modules by walking its folder, and `topo`'s parts live in
several top-level folders; so the package is staged as a wheel lays it out in a temporary folder
and checked there. Module names in the report are the same as in the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from dev.layout import ROOT, stage


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="topo-layers-") as folder:
        stage(Path(folder))
        environment = {**os.environ, "PYTHONPATH": folder}
        lint = Path(sys.executable).with_name("lint-imports")
        return subprocess.run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=folder,
                              env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
