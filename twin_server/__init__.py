"""twin-server: an OPC UA digital twin runtime."""

__version__ = "0.1.0"
