"""Model families tlbench builds beyond the plain timm VisionTransformer."""
