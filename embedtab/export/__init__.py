"""Exports of an artifact directory for serving (`embedtab export triton`: export/triton.py)."""
