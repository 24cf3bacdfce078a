"""Data bundled with the package: the small math task set of the CPU training job (`math_tasks`)."""
