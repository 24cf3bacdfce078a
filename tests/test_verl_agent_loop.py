"""`RStar2AgentLoop` inside verl 0.9.1's real classes: registry, hydra instantiation, config keys, tools, output."""

import os

import hydra
import pytest
import yaml
from hydra import compose, initialize_config_dir

import verl.trainer.config
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
from verl.tools.tool_registry import load_all_tools
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

import rstar2_agent.rollout.verl_agent_loop  # noqa: F401 - registers "rstar2_agent"
from rstar2_agent.rollout.verl_agent_loop import RStar2AgentLoop
from rstar2_agent.engine.tiny import build_tokenizer

TOK = build_tokenizer()
CONFIG_DIR = os.path.join(os.path.dirname(rstar2_agent.rollout.verl_agent_loop.__file__), "..", "config")


@pytest.fixture(scope="module")
def tool_config(tmp_path_factory, judge):
    """Our python tool yaml, pointed at the test's code judge."""
    with open(os.path.join(CONFIG_DIR, "tool_config", "python_tool_config.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["tools"][0]["config"].update(host_addr="127.0.0.1", host_port=str(judge.port))
    path = tmp_path_factory.mktemp("tools") / "python_tool_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def trainer_config(tool_config_path: str):
    with initialize_config_dir(config_dir=os.path.dirname(verl.trainer.config.__file__), version_base=None):
        return compose("ppo_trainer", overrides=[
            "actor_rollout_ref.rollout.name=vllm",
            "data.max_prompt_length=1024",
            "data.max_response_length=300",
            "actor_rollout_ref.rollout.multi_turn.enable=True",
            "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
            "actor_rollout_ref.rollout.multi_turn.format=rstar2_agent_hermes",
            f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tool_config_path}",
        ])


class ScriptedServer:
    """Stands in for verl's LLMServerClient (same `generate` signature, returns verl's TokenOutput)."""

    def __init__(self, *texts):
        self.texts, self.requests = list(texts), []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.requests.append((request_id, list(prompt_ids), dict(sampling_params)))
        text = self.texts[min(len(self.requests), len(self.texts)) - 1]
        ids = TOK.encode(text, add_special_tokens=False) + [TOK.eos_token_id]
        return TokenOutput(token_ids=ids, log_probs=[-1.0] * len(ids))


async def test_registered_instantiated_by_hydra_and_runs_real_tools(tool_config):
    assert _agent_loop_registry["rstar2_agent"]["_target_"].endswith("verl_agent_loop.RStar2AgentLoop")
    config = trainer_config(tool_config)
    tools = load_all_tools(tool_config_path=tool_config, function_tool_path=None)
    call = '<tool_call>\n{"name": "python_code_with_standard_io", "arguments": {"code": "print(6*7)", "input": ""}}\n</tool_call>'
    server = ScriptedServer("Let me run it.\n" + call, "So \\boxed{42}.")
    loop = hydra.utils.instantiate(
        _agent_loop_registry["rstar2_agent"], trainer_config=DictConfigWrap(config), server_manager=server,
        tokenizer=TOK, processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data),
        tools=ToolListWrap(tools),
    )
    assert isinstance(loop, RStar2AgentLoop) and loop.core.config.max_assistant_turns == 3
    assert loop.core.config.response_length == 300
    out = await loop.run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": "What is 6*7?"}])
    text = TOK.decode(out.prompt_ids)
    assert "python_code_with_standard_io" in text and text.endswith("<|im_start|>assistant\n<reason>")
    assert "stdout: 42" in TOK.decode(out.response_ids)
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs) <= 300
    assert out.num_turns == 4 and out.extra_fields["tool_call_count"] == 1
    assert out.extra_fields["finish_reason"] == "stop" and out.metrics.tool_calls > 0
    assert server.requests[1][2]["max_tokens"] < 300  # one budget for the whole trajectory
    batch = out.as_dict()
    assert batch["response_mask"].sum().item() == sum(out.response_mask)
    # the loss mask travels to verl's reward loop as spans (verl sends the reward no response_mask)
    from rstar2_agent.reward.verl_manager import spans_to_mask

    assert spans_to_mask(out.extra_fields["model_spans"], len(out.response_mask)).long().tolist() == out.response_mask
    assert len(out.extra_fields["model_spans"]) == 2  # two model turns around one tool turn


def test_tool_turn_format_is_shared_across_trajectories():
    from rstar2_agent.rollout.verl_agent_loop import tool_turn_format

    first = tool_turn_format(TOK, TOK.chat_template)
    assert tool_turn_format(TOK, TOK.chat_template) is first
    assert tool_turn_format(TOK, TOK.chat_template + " ") is not first


def test_only_our_tools_run_in_our_loop(tool_config):
    """verl loads the yaml's tools; ours carry their `Tool` view, anything else is refused by name."""
    from verl.tools.base_tool import BaseTool
    from verl.tools.schemas import OpenAIFunctionToolSchema

    from rstar2_agent.rollout.verl_agent_loop import loop_tools

    ours = load_all_tools(tool_config_path=tool_config, function_tool_path=None)
    assert list(loop_tools(ours)) == ["python_code_with_standard_io"]
    schema = OpenAIFunctionToolSchema.model_validate(
        {"type": "function", "function": {"name": "search", "description": "d", "parameters": {"type": "object", "properties": {}}}})
    with pytest.raises(TypeError, match="'search'.*not an rstar2_agent tool"):
        loop_tools([BaseTool({}, schema)])
