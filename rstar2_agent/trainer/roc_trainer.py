"""GRPO-RoC in verl 0.9.1's synchronous V1 trainer, registered as `trainer.v1.trainer_mode=rstar2_agent`.

verl tests the literal `trainer_mode == "sync"` in several places (replay buffer, prompt fetches, TransferQueue
dumps in checkpoints, resume), so the constructor sets the mode back to "sync" once verl has picked this class:
from then on the trainer is verl's synchronous one with the methods below overridden.

Hooked method: `_balance_batch`. In `PPOTrainer._step_once` the order is sample -> reward -> `_balance_batch`
-> old log-probs -> ref log-probs -> values -> advantages -> updates, so `_balance_batch` is the first call
after the reward exists and before anything else reads the batch: the narrowest seam. Down-sampling there
means log-prob recomputation, the GRPO advantage (mean/std over each group's kept traces) and the updates
all see only the kept traces; nothing of verl's loop is copied. The dropped traces are cleared from
TransferQueue at once (verl clears only the keys the step returns). Rewards must be in the batch at that
point: with verl's async reward loop they are computed during rollout, otherwise `_compute_reward_colocate`
runs just before.

When nothing is left (every group all-equal), the batch goes on through verl's log-prob and advantage passes
so that the step's metrics are complete, but `_update_actor` is skipped: a zero-advantage update would still
move the weights (AdamW's weight decay, and Adam's momentum from earlier steps). `actor/update_skipped` and
`down_sampling/nothing_left` say so.
"""

from __future__ import annotations

import copy
import logging

import ray
import transfer_queue as tq
from omegaconf import open_dict
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from rstar2_agent.down_sample import DownSamplingConfig
from rstar2_agent.rollout.routing import status_metrics
from rstar2_agent.trainer.selection import infra_error_flags, rollout_metrics, rows_to_keep

FIELDS = ["uid", "responses", "rm_scores", "extra_fields"]

logger = logging.getLogger(__name__)


def _rows(values) -> list:
    """Token fields come back from TransferQueue as jagged nested tensors (or lists): one list per row."""
    if hasattr(values, "unbind"):
        return [row.tolist() for row in values.unbind()]
    return [row.tolist() if hasattr(row, "tolist") else list(row) for row in values]


def _items(values) -> list:
    """Non-tensor fields (`uid`, `extra_fields`) come back as a non-tensor stack, an array or a list."""
    return list(values.tolist() if hasattr(values, "tolist") else values)


@register_trainer("rstar2_agent")
class RStar2AgentTrainer(PPOTrainerSync):
    def __init__(self, config):
        config = copy.deepcopy(config)  # the caller's config still names this trainer
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"
        super().__init__(config)
        self.down_sampling = DownSamplingConfig.from_config(config)
        self.nothing_to_learn = False
        self._router_status = None

    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        batch = self._select(batch, metrics)
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)

    def _select(self, batch, metrics: dict):
        """Log the rollout metrics of the step's real rows; with down-sampling on, keep only RoC's choice. Rows the
        sandbox failed (`infra_error` in their extra fields) are dropped whether or not down-sampling is on."""
        self.nothing_to_learn = False
        keys = [key for key, tag in zip(batch.keys, batch.tags) if not (tag or {}).get("is_padding", False)]
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=FIELDS)
        extra = _items(data["extra_fields"])
        metrics.update(rollout_metrics(extra))
        metrics.update(self._router_metrics())
        rewards = [sum(row) for row in _rows(data["rm_scores"])]
        cfg = self.down_sampling
        infra = infra_error_flags(extra)
        rows, selection_metrics = rows_to_keep([str(u) for u in _items(data["uid"])], _rows(data["responses"]),
                                               rewards, self.tokenizer, cfg, infra)
        metrics.update(selection_metrics)
        if not cfg.do_down_sampling and not any(infra):
            return batch
        metrics["down_sampling/nothing_left"] = float(rows is None)
        if rows is None:
            self.nothing_to_learn = True
            return batch
        kept = [keys[i] for i in rows]
        dropped = sorted(set(keys) - set(kept))
        if dropped:
            tq.kv_clear(keys=dropped, partition_id=batch.partition_id)
        return batch.select_keys(kept)

    def _router_metrics(self) -> dict:
        """`router/*`: how our KV-capacity balancer (rstar2_agent.rollout.routing) routed this step's turns;
        nothing under verl's default balancer. A status that cannot be read costs the metrics, not the step."""
        balancer = getattr(getattr(self, "llm_server_manager", None), "global_load_balancer", None)
        if balancer is None:
            return {}
        try:
            status = ray.get(balancer.get_status.remote(), timeout=30)
        except Exception as exc:  # noqa: BLE001 - metrics only
            logger.warning("router status unavailable: %s: %s", type(exc).__name__, exc)
            return {}
        metrics, self._router_status = status_metrics(status, self._router_status), status
        return metrics

    def _update_actor(self, batch, metrics: dict):
        metrics["actor/update_skipped"] = float(self.nothing_to_learn)
        if self.nothing_to_learn:
            return batch
        return super()._update_actor(batch, metrics)
