"""Config files shipped with the package (tool yamls under ``tool_config/``)."""
