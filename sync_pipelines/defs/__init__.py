"""The defs folder of the code location (``[tool.dg]`` in pyproject.toml): one ``SyncStack`` component."""
