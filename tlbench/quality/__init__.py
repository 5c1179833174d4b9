"""The quality stage: training or distillation, then the few-shot probe."""
