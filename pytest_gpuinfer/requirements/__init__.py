"""What a ``gpuinfer`` mark asks for and whether a report meets it (pytest-free)."""
