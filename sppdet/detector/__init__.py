"""The detector at test time: the model and the scoring of windows (:mod:`.model`),
detections and their files, combination, drawing."""
