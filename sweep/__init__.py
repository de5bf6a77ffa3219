"""The sweep: config, search space, the Tune driver, trials that launch Ray Train, MLflow runs."""
