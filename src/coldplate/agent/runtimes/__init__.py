"""Runtimes run instances: `sim` (simulated); the interface is `base.Runtime`."""
