"""Offline training and evaluation of the CNN feature extractor and the soft-voting ensemble."""
