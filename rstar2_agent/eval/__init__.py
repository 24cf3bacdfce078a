"""`rstar2-agent eval` and the chat example: any served model (or a model folder) through the training-time
agent loop, tools, chat template, code judge and reward.

    data     the problems (bundled, verl parquet, question/answer json(l))
    clients  generation: `/v1/completions` of a served model, or the engine's in-process generator
    agent    the template, tools and `AgentLoop` as training builds them, plus a recording tool wrapper
    metrics  avg@n, pass@n, maj@n and the trajectory numbers, as pure functions of the records
    output   the output folder: trajectories JSONL (resume), summary JSON, the console table
    runner   the concurrent eval loop
    cli      the `rstar2-agent eval` command
    server   a small OpenAI-compatible completions server over the transformers generator (tests, benchmark,
             CPU machines without vLLM)
"""
