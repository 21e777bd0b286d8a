"""Maps the design card's top-level folders into the single import package `topo`."""

from setuptools import find_packages, setup

FOLDERS = {"topo": "topo", "topo.generator": "generator", "topo.runtime": "runtime", "topo.templates": "templates"}


def packages_under(prefix: str, folder: str) -> list[str]:
    return [prefix, *(f"{prefix}.{sub}" for sub in find_packages(folder))]


setup(
    package_dir=FOLDERS,
    packages=sorted({pkg for prefix, folder in FOLDERS.items() for pkg in packages_under(prefix, folder)}),
)
