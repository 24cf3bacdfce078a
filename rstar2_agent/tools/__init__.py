"""Tools of the rStar2-Agent loop: the tool-call parser, the Python tools and their result format.

Importing this package does not import verl; the verl adapters live in
`rstar2_agent.tools.verl_tools` (``BaseTool`` subclasses) and `rstar2_agent.tools.verl_parser`
(the ``rstar2_agent_hermes`` ``ToolParser``).
"""

from .base import Tool, ToolResult, format_result
from .jupyter_tool import JupyterTool
from .parser import ToolCall, ToolCallError, parse_tool_calls
from .python_tool import PythonTool

__all__ = [
    "parse_tool_calls",
    "ToolCall",
    "ToolCallError",
    "ToolResult",
    "Tool",
    "format_result",
    "PythonTool",
    "JupyterTool",
]
