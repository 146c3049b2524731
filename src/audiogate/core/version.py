"""The installed audiogate version (one place: the package, the service and the report read it)."""

__version__ = "0.2.0"
