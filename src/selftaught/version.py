"""The package's version: a leaf module, so that anything may import it without loading the package's API."""

__version__ = "0.1.0"
