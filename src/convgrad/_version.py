"""The package version, in one place (read by the CLI, exports and file metadata)."""

__version__ = "0.2.3"
