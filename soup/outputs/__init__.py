"""Outputs: the comparison table, the terminal report, figures, the MLflow soup run and the registered model."""
