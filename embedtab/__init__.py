"""embedtab: offline embedding and feature preparation for NVIDIA Merlin recommender systems.

Importing embedtab is cheap: heavy libraries (torch, nvtabular, open_clip) load inside the stages.
"""

__version__ = "0.2.0"
