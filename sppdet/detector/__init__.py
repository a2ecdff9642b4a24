"""The detector at test time: scoring windows, detections and their files, combination,
drawing."""
