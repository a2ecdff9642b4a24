"""Training of the detector parts: training windows, fc fine-tuning, SVMs, box regression."""
