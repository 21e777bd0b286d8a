"""Packaging of the single import package `topo` from the design card's top-level folders.

`[tool.setuptools.package-dir]` in pyproject.toml maps each part onto its real folder
(generator/ is `topo.generator`, runtime/ `topo.runtime`, provision/ `topo.provision`,
templates/ `topo.templates`); this file lists the subpackages under each. Template folders hold
no Python, hence namespace discovery.
"""

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, setup

PACKAGE_DIRS: dict[str, str] = tomllib.loads(Path(__file__).with_name("pyproject.toml").read_text())[
    "tool"]["setuptools"]["package-dir"]


def packages() -> list[str]:
    found = set(PACKAGE_DIRS)
    for package, folder in PACKAGE_DIRS.items():
        found |= {f"{package}.{sub}" for sub in find_namespace_packages(where=folder, exclude=["*__pycache__*"])}
    return sorted(found)


setup(packages=packages(), package_dir=PACKAGE_DIRS)
