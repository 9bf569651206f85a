"""hetfx: hierarchical models of heterogeneous treatment effects."""
__version__ = "0.1.0"
