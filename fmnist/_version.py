"""The package version, in a leaf module so that every layer can record it."""

__version__ = "0.3.0"
