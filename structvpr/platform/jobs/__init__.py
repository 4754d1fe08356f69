"""Ray Train jobs, and only what runs them: the teacher (segmentation branch) and the weighted-KD student (RGB branch)."""
