"""regmix: choose a language model's pre-training data mixture by regression (RegMix)."""

__version__ = "0.1.0"
