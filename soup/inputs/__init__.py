"""Inputs of the soup stage: the sweep's records and manifest, explicit files, the base, reading and
screening weights."""
