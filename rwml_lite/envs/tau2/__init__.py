"""tau2-bench through its own package: customer-service conversations between our agent and a
simulated user, played by upstream's orchestrator and scored by upstream's evaluator; we add the
batched sampling of both sides and the world model's view of the conversation (masking.py)."""
