"""MLflow registry promotion, pyfunc model, serving and cluster files."""
