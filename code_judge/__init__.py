"""Fast, sandboxed code execution behind an HTTP API, a drop-in for the public code-judge.

Parts: `api` (FastAPI in front of a Redis queue), `worker` (supervised worker processes, each with a warm
fork server that runs code in a Linux sandbox), `client` (async client with micro-batching), `local`
(start a private Redis and the whole service on one machine).
"""

__version__ = "0.1.0"
