"""Model files: JSON header + safetensors weights in one file; never unpickled."""

from .model_file import FORMAT, load, read_header, save

__all__ = ["FORMAT", "load", "read_header", "save"]
