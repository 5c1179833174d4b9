"""Labelled data for the quality stage: built-in offline sets, folders, torchvision, clips."""
