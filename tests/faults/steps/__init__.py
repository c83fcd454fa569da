"""The cheapest pipeline the fault tests can run the whole loop on: `train` registers a
constant model, `evaluate` reports the gate's metric for it. No data read, nothing fitted."""
