"""What every part of topo shares, derived once: the resolved model, names, the desired broker state,
header and metric names, and broker connection settings. Imports none of the other parts."""
