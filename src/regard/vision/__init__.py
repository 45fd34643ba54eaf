"""Pixels -> faces. No I/O beyond reading bundled model files; no storage; no HTTP."""
