"""`python -m dev.typecheck [PACKAGE...]`: mypy over the import package as packaging maps it.

The package `topo` is assembled from top-level folders (pyproject's
`[tool.setuptools.package-dir]`), and mypy follows neither that mapping nor the editable
install's import hook. So the module list is built here, each module named as Python imports it
(`topo.generator.load`) and found at its real path (`generator/load.py`): errors point at the
files git and editors show. Other packages (dev, bench) are checked as they are.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

from dev.layout import ROOT, modules, package_dirs


def main(argv: Sequence[str] = ()) -> int:
    others = [arg for name in argv for arg in ("-p", name)] or ["-p", "topo"]
    extra_sources, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *others])
    sources = [BuildSource(str(file), name) for name, file in modules(package_dirs())]
    sources += [source for source in extra_sources if argv]
    try:
        result = build.build(sources, options)
        messages = result.errors
    except CompileError as error:
        messages = error.messages
    for line in messages:
        print(line)
    files = len(sources)
    if messages:
        print(f"mypy: {sum(': error:' in m for m in messages)} error(s) in {files} source files", file=sys.stderr)
        return 1
    print(f"mypy: no issues in {files} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
