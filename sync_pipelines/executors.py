"""The executor of the code location, chosen per deployment by ``$SYNC_EXECUTOR`` without editing Python.

``in_process`` (default) runs every step in the run's own process, which is fastest on one machine because a step
costs no interpreter start; ``multiprocess`` gives each step its own process on the same machine; ``celery`` sends
each step to Celery workers on any number of machines (see docs/production.md).
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTORS = ("in_process", "multiprocess", "celery")
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"


def _celery_executor() -> dg.ExecutorDefinition:
    """Dagster's Celery executor on ``$SYNC_CELERY_BROKER``; the result backend is the same Redis, or ``rpc://``.

    A URL read from the environment is passed as an ``env`` reference, so a password in it is resolved in each process
    and never stored in the run's configuration.
    """
    try:
        from dagster_celery import celery_executor
    except ImportError as exc:
        raise ImportError(
            "SYNC_EXECUTOR=celery needs the dagster-celery package: pip install 'sync_pipelines[celery]'"
        ) from exc
    broker_url = os.environ.get("SYNC_CELERY_BROKER") or DEFAULT_CELERY_BROKER
    broker = {"env": "SYNC_CELERY_BROKER"} if os.environ.get("SYNC_CELERY_BROKER") else DEFAULT_CELERY_BROKER
    backend = broker if broker_url.startswith(("redis://", "rediss://")) else "rpc://"
    return celery_executor.configured({"broker": broker, "backend": backend}, name="celery")


def executor_kind() -> str:
    return os.environ.get("SYNC_EXECUTOR") or "in_process"


def steps_share_a_process() -> bool:
    """Whether a run's steps all run in its own process, so that one step can prepare what later ones use."""
    return executor_kind() == "in_process"


def executor_from_env() -> dg.ExecutorDefinition:
    """The executor ``$SYNC_EXECUTOR`` names (``in_process`` when unset)."""
    kind = executor_kind()
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        return dg.multiprocess_executor
    if kind == "celery":
        return _celery_executor()
    raise ValueError(f"SYNC_EXECUTOR: unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")
