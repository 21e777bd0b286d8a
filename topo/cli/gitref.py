"""A topology file as another git commit has it (`topo diff --against REF`, `topo validate --against REF`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from topo.cli.options import CliError

GIT_TIMEOUT = 60
ABSENT = ("exists on disk, but not in", "does not exist in")  # git's words for a path the commit lacks


class AbsentAtRef(CliError):
    """The commit exists but does not hold the file (a topology added since)."""


def read_at(ref: str, file: Path) -> str:
    """The text of `file` (a path in a git work tree) at commit `ref`; CliError naming the fix otherwise."""
    folder = file.parent if str(file.parent) else Path(".")
    try:
        shown = subprocess.run(["git", "-C", str(folder), "show", f"{ref}:./{file.name}"], capture_output=True,
                               text=True, timeout=GIT_TIMEOUT, check=False)
    except FileNotFoundError:
        raise CliError(f"--against {ref}: git is not installed; install git, or compare two files with "
                       "`topo diff OLD NEW`") from None
    except subprocess.TimeoutExpired:
        raise CliError(f"--against {ref}: git did not answer within {GIT_TIMEOUT} s") from None
    if shown.returncode != 0:
        problem = (shown.stderr.strip().splitlines() or ["git show failed"])[-1].removeprefix("fatal: ")
        if any(words in problem for words in ABSENT):
            raise AbsentAtRef(f"--against {ref}: {file} is not in {ref} ({problem}); compare with a commit that "
                              "holds it")
        raise CliError(f"--against {ref}: cannot read {file} at {ref} ({problem}); pass a commit, branch or tag "
                       f"of the repository holding {file} in which it exists, e.g. --against HEAD~1")
    return shown.stdout
