"""StructVPR platform: structure-aware visual place recognition on Ray, MLflow, WebDataset and FAISS."""

__version__ = "0.1.0"
