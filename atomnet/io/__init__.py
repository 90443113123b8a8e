"""Model files: JSON header + safetensors weights in one file; never unpickled."""

from .model_file import FORMAT, ModelFileError, load, read_header, save

__all__ = ["FORMAT", "ModelFileError", "load", "read_header", "save"]
