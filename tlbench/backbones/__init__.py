"""Model families beyond the stock timm ViTs: offline pretrained weights (dinov2)."""
