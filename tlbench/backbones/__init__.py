"""Model families: timm ViTs (aliases, building, what is supported) and video ViTs."""
