"""Ray Train jobs: the teacher (segmentation branch) and the weighted-KD student (RGB branch)."""
