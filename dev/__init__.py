"""Developer tooling for topo (not part of the installed package)."""
