"""The local twin: Trellis on one machine against moto (never deployed)."""
