"""The package's version, in a module of its own so that the client's User-Agent can name it."""

__version__ = "0.1.0"
