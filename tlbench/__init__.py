"""tlbench: where in a ViT should tokens be reduced?"""

__version__ = "0.1.0"
