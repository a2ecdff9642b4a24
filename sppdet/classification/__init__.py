"""Image classification for SPP-net pretraining (paper section 3).

A backbone can be pretrained as an image classifier before it serves detection: SPP replaces
the last pooling layer, training uses 224 x 224 crops (multi-size training alternates epochs at
224 and 180, the 180 input being the 224 crop resized), and testing feeds the full image with
its shorter side at 256. This sub-package holds the image-level examples (an image folder, or
object crops and background crops cut from a VOC-layout detection dataset), the crops and
colour jitter used for training and testing, and the classifier built on them.
"""
