"""rStar-Math search: MCTS, step beam search and greedy over code-augmented reasoning steps.

Modules, one idea each:

* :mod:`.tree` - search-tree nodes (visits, Q values, selection score);
* :mod:`.steps` - the step format and the terminal rules;
* :mod:`.config` - :class:`SearchConfig`, upstream's yaml keys and defaults;
* :mod:`.search` - lock-step search over a batch of questions (one generate / run / score call per round);
* :mod:`.executor` - code steps through the code judge;
* :mod:`.records` - upstream's JSONL output format, read back and resume;
* :mod:`.ppm` - the process preference model (causal LM + value head);
* :mod:`.backends` - generation backends behind the ``generate`` interface.
"""
