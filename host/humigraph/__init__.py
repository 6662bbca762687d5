"""humigraph host toolkit: virtual boards, board tools, world simulator, gateway and model."""

__version__ = "0.1.0"
