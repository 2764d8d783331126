"""Training stages on top of TRL: the filter model (SFT), RWML (GRPO)."""
