"""embedtab's version, in a module that imports nothing: every part of the package (the manifest
records it) reads it from here, not from the package root, which leads to the Python API."""

__version__ = "0.2.0"
