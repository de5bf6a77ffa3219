"""Scoring: the evaluation sets, one resident model evaluating weights (in process or on Ray workers),
sealed logits, BatchNorm statistics."""
