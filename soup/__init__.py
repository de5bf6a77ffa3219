"""The soup stage: ingredients, state-dict math, soup and ensemble methods, evaluation, the report.

Runs without Ray: the contract with the sweep is data (MLflow experiment -> manifest -> checkpoints).
"""
