"""The CPU engine's GRPO update, on verl's advantage and policy loss, with a tiny Qwen built in the test."""

import torch

from rstar2_agent.engine.update import Rollout, collate, grpo_advantages, policy_step, response_logprobs
from rstar2_agent.engine.tiny import build_model, build_tokenizer

TOK = build_tokenizer()
PROMPT = TOK.encode("<|im_start|>user\nWhat is 6*7?<|im_end|>\n<|im_start|>assistant\n<reason>", add_special_tokens=False)
GOOD = TOK.encode("It is \\boxed{42}.", add_special_tokens=False) + [TOK.eos_token_id]
BAD = TOK.encode("It is \\boxed{41}.", add_special_tokens=False) + [TOK.eos_token_id]


def test_collate_positions_and_masks():
    tool = [0, 0, 0]
    b = collate([Rollout(PROMPT, GOOD + [5, 6, 7], [1] * len(GOOD) + tool, 1.0, "a"),
                 Rollout(PROMPT[:3], BAD, [1] * len(BAD), 0.0, "a")], TOK.pad_token_id)
    assert b.response_mask[0].tolist()[-3:] == [0.0, 0.0, 0.0]  # tool tokens never in the loss
    assert b.response_mask[1].sum().item() == len(BAD) and b.response_mask[1, len(BAD):].sum().item() == 0
    row1 = b.input_ids[1, b.response_positions[1, : len(BAD)]].tolist()
    assert row1 == BAD  # positions point at the response tokens inside prompt+response


def test_grpo_advantage_is_verls_and_skips_tool_tokens():
    b = collate([Rollout(PROMPT, GOOD + [5, 6], [1] * len(GOOD) + [0, 0], 1.0, "a"),
                 Rollout(PROMPT, BAD, [1] * len(BAD), 0.0, "a")], TOK.pad_token_id)
    adv = grpo_advantages(b)
    assert round(adv[0, 0].item(), 3) == 0.707 and round(adv[1, 0].item(), 3) == -0.707
    assert adv[0, -2:].tolist() == [0.0, 0.0]  # masked tool tokens carry no advantage


def test_policy_steps_move_probability_towards_the_rewarded_answer():
    model = build_model(TOK, seed=1)
    rollouts = [Rollout(PROMPT, GOOD, [1] * len(GOOD), 1.0, "q"), Rollout(PROMPT, BAD, [1] * len(BAD), 0.0, "q")]
    batch = collate(rollouts, TOK.pad_token_id)
    adv = grpo_advantages(batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = (response_logprobs(model, batch) * batch.response_mask).sum(-1)
    for _ in range(5):
        with torch.no_grad():
            old = response_logprobs(model, batch)
        stats = policy_step(model, opt, batch, adv, old, micro_batch_size=1)
    with torch.no_grad():
        after = (response_logprobs(model, batch) * batch.response_mask).sum(-1)
    assert after[0] > before[0] and after[1] < before[1]
    assert stats["grad_norm"] > 0 and set(stats) == {"pg_loss", "pg_clipfrac", "ppo_kl", "grad_norm"}


def test_micro_batches_give_the_whole_batch_token_mean():
    """verl divides each micro-batch's token sum by the whole batch's token count, so the step (loss and
    gradient) does not depend on how the batch is cut into micro-batches."""
    rollouts = [Rollout(PROMPT, GOOD, [1] * len(GOOD), 1.0, "q"), Rollout(PROMPT, BAD[:4], [1] * 4, 0.0, "q"),
                Rollout(PROMPT, BAD, [1] * len(BAD), 0.0, "q")]
    batch = collate(rollouts, TOK.pad_token_id)
    adv = grpo_advantages(batch)
    grads, losses = [], []
    for micro in (1, 3):
        model = build_model(TOK, seed=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the weights, look at the gradient
        losses.append(policy_step(model, opt, batch, adv, None, micro_batch_size=micro, max_grad_norm=1e9)["pg_loss"])
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert abs(losses[0] - losses[1]) < 1e-5 and losses[0] != 0.0
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0


def test_logprobs_are_those_of_the_temperature_the_rollout_sampled_at():
    """verl's actor divides the logits by the rollout temperature; so does the CPU engine, so that the loss sees
    the distribution `sample_next` drew from, not the T=1 one."""
    model = build_model(TOK, seed=1)
    batch = collate([Rollout(PROMPT, GOOD, [1] * len(GOOD), 1.0, "q")], TOK.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids).logits[0, len(PROMPT) - 1: len(PROMPT) - 1 + len(GOOD)]
        at_08 = response_logprobs(model, batch, temperature=0.8)[0]
        at_1 = response_logprobs(model, batch)[0]
    sampled = torch.log_softmax(logits.float() / 0.8, dim=-1).gather(-1, torch.tensor(GOOD)[:, None]).squeeze(-1)
    assert torch.allclose(at_08, sampled, atol=1e-5)
    assert not torch.allclose(at_08, at_1, atol=1e-3)


def test_policy_step_takes_its_logprobs_at_the_rollout_temperature():
    """Old log-probs taken at the rollout temperature and the step's own agree (ratio 1, ppo_kl 0) only if the
    step uses that temperature too."""
    rollouts = [Rollout(PROMPT, GOOD, [1] * len(GOOD), 1.0, "q"), Rollout(PROMPT, BAD, [1] * len(BAD), 0.0, "q")]
    batch = collate(rollouts, TOK.pad_token_id)
    adv = grpo_advantages(batch)
    model = build_model(TOK, seed=1)
    with torch.no_grad():
        old = response_logprobs(model, batch, temperature=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    assert abs(policy_step(model, opt, batch, adv, old, temperature=0.5)["ppo_kl"]) < 1e-6
    assert abs(policy_step(model, opt, batch, adv, old)["ppo_kl"]) > 1e-4
