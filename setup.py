"""Packaging of the single import package `topo`.

The design card's top-level folders are its subpackages: topo/generator, topo/runtime and
topo/templates are symlinks to generator/, runtime/ and templates/, so every tool (pip, mypy,
pytest, editors) sees one ordinary package and a wheel contains real files. Template folders
hold no Python, hence namespace discovery.
"""

from setuptools import find_namespace_packages, setup

setup(packages=find_namespace_packages(include=["topo", "topo.*"], exclude=["*.__pycache__"]))
