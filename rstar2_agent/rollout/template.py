"""The chat template, and the exact tokens of a tool turn derived from it.

The agent loop is token-in-token-out: earlier turns are never re-tokenised. The tokens appended after a model
turn are the chat template's own rendering of the tool messages, cut out of a rendered conversation, so the
concatenated ids equal what the template produces for the same conversation. With the default template:

    ...model text<|im_end|>                         <- generated (loss mask 1), ends with EOS
    \\n<|im_start|>user\\n<tool_response>\\n{out}\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n<reason>
                                                    <- appended by the loop (loss mask 0)
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence, Union

DEFAULT_TEMPLATE = "chat_template.jinja"
_ASSISTANT = "@@RSTAR2_ASSISTANT_CONTENT@@"
_TOOL = "@@RSTAR2_TOOL_OUTPUT_{}@@"


def load_chat_template(path: Optional[str] = None) -> str:
    """The template text: `path` if given, else the rStar2 ChatML template shipped in rstar2_agent/config."""
    if path:
        return Path(path).read_text()
    return resources.files("rstar2_agent.config").joinpath(DEFAULT_TEMPLATE).read_text()


def render(tokenizer, messages: list[dict], template: str, tools: Optional[list[dict]] = None,
           add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def prompt_ids(tokenizer, template: str, conversation: Union[str, Sequence[dict]],
               system_prompt: Optional[str] = None, tools: Optional[list[dict]] = None) -> list[int]:
    """The token ids of a prompt, up to the assistant's turn opened by the chat template: the one prompt builder
    of training (the CPU engine and verl's agent loop), evaluation and the chat.

    `conversation` is a problem (one user message) or the messages so far; a `system_prompt`, when given, goes
    first. The shipped template lists `tools` (their schemas), when given, in its system turn after the system
    text: verl's agent loop always gives them, the CPU engine only when it has no system prompt (its default
    one shows a worked call instead). Ids come from the rendered text without added special tokens (the
    template writes them)."""
    messages = [{"role": "user", "content": conversation}] if isinstance(conversation, str) else list(conversation)
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + messages
    text = render(tokenizer, messages, template, tools=tools, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


class ToolTurnFormat:
    """Text and ids of the turn that carries tool outputs back to the model, as the template renders it."""

    def __init__(self, tokenizer, template: str):
        self.tokenizer = tokenizer
        self.template = template
        self.eos_text = tokenizer.eos_token
        self.eos_id = tokenizer.eos_token_id
        self._format = lru_cache(maxsize=16)(self._derive)

    def _derive(self, n: int) -> str:
        """The text after an assistant turn's EOS when `n` tool messages follow, with `{i}` placeholders."""
        messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _ASSISTANT}]
        messages += [{"role": "tool", "content": _TOOL.format(i)} for i in range(n)]
        full = render(self.tokenizer, messages, self.template, add_generation_prompt=True)
        after = full[full.index(_ASSISTANT) + len(_ASSISTANT):]
        if not after.startswith(self.eos_text):
            raise ValueError(f"chat template must end an assistant turn with the EOS text {self.eos_text!r}")
        after = after[len(self.eos_text):].replace("{", "{{").replace("}", "}}")
        for i in range(n):
            after = after.replace(_TOOL.format(i), "{%d}" % i)
        return after

    def text(self, outputs: Sequence[str], model_emitted_eos: bool = True) -> str:
        body = self._format(len(outputs)).format(*outputs)
        return body if model_emitted_eos else self.eos_text + body

    def ids(self, outputs: Sequence[str], model_emitted_eos: bool = True) -> list[int]:
        return self.tokenizer.encode(self.text(outputs, model_emitted_eos), add_special_tokens=False)
