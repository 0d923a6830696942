"""netchat's version, on its own so that any module can read it without importing
the package's front (``netchat/__init__.py``, which imports the Daemon)."""

__version__ = "0.1.0"
