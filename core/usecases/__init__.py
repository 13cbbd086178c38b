"""The use cases, one module each, talking to the ports (core/ports.py)."""
