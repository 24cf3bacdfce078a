"""The worked examples in the rstar2_agent.math docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["tree", "steps", "config", "prompts", "executor", "ppm"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(f"rstar2_agent.math.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
