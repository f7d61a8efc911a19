"""surgewatch: spot user-migration surges in event streams as they happen."""

__version__ = "0.1.0"
