"""Soup and ensemble methods: the declared specs, and one module per method (selection on held-out only)."""
