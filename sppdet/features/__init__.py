"""Cached conv5 features, pooling of windows from them, and the fc6/fc7 head."""
