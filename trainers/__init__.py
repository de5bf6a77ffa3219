"""The fine-tuning library: configs, models, data, the one training loop, checkpoints, metrics.

Never imports ray: the sweep calls into this package from Ray workers, and `trainers` runs alone.
"""
__version__ = "0.1.0"
