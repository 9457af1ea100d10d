"""Fakes at the hardware boundary: a fake NVML (pynvml.py) and the machines it describes."""
