"""Applications composed from the lingua library."""
