"""rstar2-agent: agentic reinforcement learning with a Python tool (rStar2-Agent on verl) and rStar-Math search."""

__version__ = "0.1.0"
