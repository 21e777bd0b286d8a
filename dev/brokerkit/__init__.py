"""The parts of the dev broker manager (`dev/brokers.py`); standard library only."""
