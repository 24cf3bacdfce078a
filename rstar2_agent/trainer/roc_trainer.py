"""GRPO-RoC in verl 0.9.1's synchronous V1 trainer, registered as `trainer.v1.trainer_mode=rstar2_agent`.

Hooked method: `_balance_batch`. In `PPOTrainer._step_once` the order is sample -> reward -> `_balance_batch`
-> old log-probs -> ref log-probs -> values -> advantages -> updates, so `_balance_batch` is the first call
after the reward exists and before anything else reads the batch: the narrowest seam. Down-sampling there
means log-prob recomputation, the GRPO advantage (mean/std over each group's kept traces) and the updates
all see only the kept traces; nothing of verl's loop is copied. The hook holds no state, so checkpoint
resume is verl's own. Rewards must be in the batch at that point: with verl's async reward loop they are
computed during rollout, otherwise `_compute_reward_colocate` runs just before.

When nothing would be left (every group all-equal), the batch is kept as it is: GRPO gives all-equal groups
zero advantage, so the step updates nothing, and `down_sampling/nothing_left` says so (upstream skipped the
step instead, which verl's V1 loop does not allow from here).
"""

from __future__ import annotations

import transfer_queue as tq
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from rstar2_agent.down_sample.batch import DownSamplingConfig
from rstar2_agent.trainer.hook import rows_to_keep

FIELDS = ["uid", "prompts", "responses", "rm_scores"]


def _rows(values) -> list:
    """Token fields come back from TransferQueue as jagged nested tensors (or lists): one list per row."""
    if hasattr(values, "unbind"):
        return [row.tolist() for row in values.unbind()]
    return [row.tolist() if hasattr(row, "tolist") else list(row) for row in values]


def _strings(values) -> list[str]:
    """`uid` comes back as a non-tensor stack (or a list); verl itself reads it with `.tolist()`."""
    return [str(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


@register_trainer("rstar2_agent")
class RStar2AgentTrainer(PPOTrainerSync):
    def __init__(self, config):
        super().__init__(config)
        self.down_sampling = DownSamplingConfig.from_config(config)

    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if self.down_sampling.do_down_sampling:
            batch = self._down_sample(batch, metrics)
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)

    def _down_sample(self, batch, metrics: dict):
        real = [i for i, tag in enumerate(batch.tags) if not (tag or {}).get("is_padding", False)]
        keys = [batch.keys[i] for i in real]
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=FIELDS)
        rows, ds_metrics = rows_to_keep(_strings(data["uid"]), _rows(data["prompts"]),
                                        _rows(data["responses"]), _rows(data["rm_scores"]), self.tokenizer,
                                        self.down_sampling)
        metrics.update(ds_metrics)
        metrics["down_sampling/nothing_left"] = float(rows is None)
        if rows is None:
            return batch
        return batch.select_keys([keys[i] for i in rows])
