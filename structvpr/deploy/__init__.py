"""Services on this machine, each started in its own process group and stopped by PID: a local Ray cluster, an mlflow server."""
