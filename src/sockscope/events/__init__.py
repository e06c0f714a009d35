"""Live connection events: as they happen, for other programs."""
