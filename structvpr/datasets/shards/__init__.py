"""WebDataset shards: plan, write, verify and read RGB + precomputed segmentation + metadata."""
