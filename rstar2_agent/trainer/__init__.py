"""GRPO-RoC inside verl's trainer: `selection.py` (pure glue from a scored rollout to the rows to keep and the
rollout metrics) and `roc_trainer.py` (the verl 0.9.1 V1 trainer subclass that calls it; imported only where verl
runs)."""
