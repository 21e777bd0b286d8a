"""Helpers every test directory shares: awaiting conditions, deciding when a missing broker fails."""
