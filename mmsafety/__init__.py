"""mmsafety core: model adapters, image I/O, placement, run records, registries."""

__version__ = "0.1.0"
