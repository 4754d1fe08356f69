"""Dataset tooling: formats, synthetic city, segmentation, and WebDataset shards."""
