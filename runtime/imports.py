"""Importing a module the user named (a handler's `module:function`, `topo run --import MODULE`), and saying
in one line why it failed: which module is really missing, where a syntax error is, what the module raised.

Python's own message ("No module named 'foo'") does not say whether `foo` is the module the user named
or something that module imports; the two need different fixes (a folder on the path vs. a package to
install), so they are told apart here.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any


class ImportFailure(LookupError):
    """A module or attribute the user named cannot be loaded. `location` is `FILE:LINE:COL` when the
    message is a syntax error at that place (printed first, like a compiler's message)."""

    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location

    def __str__(self) -> str:
        return str(self.args[0])


def shown_path(filename: str) -> str:
    """`filename` relative to the current folder when it is inside it (shorter, and what an editor opens)."""
    try:
        return os.path.relpath(filename) if Path(filename).resolve().is_relative_to(Path.cwd()) else filename
    except (OSError, ValueError):
        return filename


def _user_frames(traceback: TracebackType | None) -> Iterator[tuple[str, int, str]]:
    """(file, line, module) of each traceback frame outside the import machinery."""
    while traceback is not None:
        frame = traceback.tb_frame
        filename = frame.f_code.co_filename
        if not filename.startswith("<frozen ") and "importlib" not in Path(filename).parts:
            yield filename, traceback.tb_lineno, str(frame.f_globals.get("__name__", "?"))
        traceback = traceback.tb_next


def _innermost(error: BaseException, skip: str) -> tuple[str, int, str] | None:
    """The innermost user frame of `error` other than this module's own (`skip`)."""
    frames = [f for f in _user_frames(error.__traceback__) if f[2] != skip]
    return frames[-1] if frames else None


def is_missing_itself(name: str, missing: str | None) -> bool:
    """True when the module not found is `name` itself or one of its parent packages."""
    return missing is not None and (name == missing or name.startswith(missing + "."))


def import_user_module(name: str, role: str) -> ModuleType:
    """`importlib.import_module(name)`, raising ImportFailure with one line starting with `role` (e.g.
    "handler 'mod:fn'") that names the real cause and the fix. SystemExit and KeyboardInterrupt pass."""
    try:
        return importlib.import_module(name)
    except SyntaxError as error:
        location = f"{shown_path(error.filename or name)}:{error.lineno or 0}:{error.offset or 0}"
        raise ImportFailure(f"{location}: syntax error: {error.msg} (importing {role})", location) from None
    except ModuleNotFoundError as error:
        parent, _, leaf = str(error.name).rpartition(".")
        if is_missing_itself(name, error.name) and parent in sys.modules:  # the package is there, not the module
            folders = list(getattr(sys.modules[parent], "__path__", []))
            hint = did_you_mean(leaf, [module.name for module in pkgutil.iter_modules(folders)]) or "; check the name"
            where = f" ({shown_path(folders[0])})" if folders else ""
            raise ImportFailure(f"{role}: package {parent}{where} has no module {leaf!r}{hint}") from None
        if is_missing_itself(name, error.name):
            source = name.replace(".", "/") + ".py"
            raise ImportFailure(
                f"{role}: no module named {error.name!r} in the current folder ({os.getcwd()}) or on sys.path; "
                f"run topo from the folder holding {source}, or add that folder to PYTHONPATH") from None
        place = _innermost(error, __name__)
        importer, where = (place[2], f" ({shown_path(place[0])}:{place[1]})") if place else (name, "")
        if str(error.name).split(".")[0] == name.split(".")[0]:  # a module of the user's own package
            raise ImportFailure(f"{role}: {importer} imports {error.name}, which does not exist{where}; "
                                "fix the import") from None
        raise ImportFailure(f"{role}: {importer} imports {error.name}, which is not installed{where}; install "
                            "the package that provides it, or fix the import") from None
    except Exception as error:  # the module's own code failed while it was imported
        place = _innermost(error, __name__)
        where = f" at {shown_path(place[0])}:{place[1]}" if place else ""
        raise ImportFailure(f"{role}: importing {name} raised {type(error).__name__}: {error}{where}; "
                            "fix the module") from None


def public_callables(target: Any) -> list[str]:
    return [n for n in dir(target) if not n.startswith("_") and callable(getattr(target, n, None))]


def did_you_mean(name: str, candidates: list[str]) -> str:
    """'; did you mean 'x'?' for the closest candidates, or '' when none is close."""
    close = difflib.get_close_matches(name, candidates, n=3)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
