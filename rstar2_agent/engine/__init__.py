"""The small in-process engine of `rstar2-agent train` on CPU: transformers generation and verl's GRPO math."""
