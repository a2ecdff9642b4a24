"""The R-CNN baseline: warped crops through the whole network (for the speed comparison)."""
