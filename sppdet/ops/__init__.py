"""Pure tensor and array operations with reference tests (boxes, NMS, scales, window mapping,
SPP pooling), in the spirit of ``torchvision.ops``."""
