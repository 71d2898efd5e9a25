"""Dagster components of this project, listed by ``dg list components`` (the ``registry_modules`` of ``[tool.dg]``)."""

from sync_pipelines.components.sync_stack import SyncStack

__all__ = ["SyncStack"]
