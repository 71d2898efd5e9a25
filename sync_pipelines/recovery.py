"""Runs whose process died (``kill -9``, a crash, a lost machine) are found and ended, and their pool slots freed.

A run executed in a process of its own (``sync-pipelines sync``, ``backfill``) carries tags naming the host and the
process that runs it. A killed process cannot mark its run failed nor give back the concurrency slots its steps
hold, so Dagster would show the run as started for good and every later run would wait for those slots forever.
Before a new run starts, :func:`recover_dead_runs` checks the runs still in progress that were started on this host
and whose process is gone, marks them failed and frees their slots; it also frees slots still held by runs that
have already ended (a run marked failed by hand keeps its slots otherwise).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES

HOST_TAG = "sync_pipelines/host"
PID_TAG = "sync_pipelines/pid"
# The process's start time as the kernel counts it: a pid reused by another process since is not taken for the run's.
PROCESS_START_TAG = "sync_pipelines/process_start"

IN_PROGRESS = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING]


@dataclass(frozen=True)
class Recovered:
    run_id: str
    pid: int | None  # None: the run had already ended, only its slots were still held
    slots_freed: int

    def describe(self) -> str:
        if self.pid is None:
            return f"run {self.run_id} had ended but held {self.slots_freed} pool slot(s): freed"
        return (f"run {self.run_id} (process {self.pid} is gone): marked failed, "
                f"{self.slots_freed} pool slot(s) freed")


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/<pid>/stat), None where /proc does not tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def runner_tags() -> dict[str, str]:
    """Tags that name this process as the one running a run, for :func:`recover_dead_runs` to check later."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    start = _process_start(pid)
    if start is not None:
        tags[PROCESS_START_TAG] = start
    return tags


def _is_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return start is None or _process_start(pid) in (start, None)


def recover_dead_runs(instance: dg.DagsterInstance) -> list[Recovered]:
    """End the runs of this host whose process is gone and free their slots, and free the slots of ended runs."""
    recovered: list[Recovered] = []
    host = socket.gethostname()
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS, tags={HOST_TAG: host}))
    for record in records:
        run = record.dagster_run
        try:
            pid = int(run.tags[PID_TAG])
        except (KeyError, ValueError):
            continue
        if _is_alive(pid, run.tags.get(PROCESS_START_TAG)):
            continue
        instance.report_run_failed(run, f"Its process ({pid} on {host}) ended without finishing the run "
                                        "(killed or crashed); marked failed by sync-pipelines.")
        recovered.append(Recovered(run.run_id, pid, _free_slots(instance, run.run_id)))
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            ended = instance.get_run_records(dg.RunsFilter(run_ids=list(holders), statuses=FINISHED_STATUSES))
            for record in ended:
                freed = _free_slots(instance, record.dagster_run.run_id)
                if freed:
                    recovered.append(Recovered(record.dagster_run.run_id, None, freed))
    return recovered


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> int:
    """Give back every slot ``run_id`` holds or waits for; the number of slots it held."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return 0
    infos = storage.get_concurrency_infos(storage.get_concurrency_keys())
    held = sum(slot.run_id == run_id for info in infos.values() for slot in info.claimed_slots)
    storage.free_concurrency_slots_for_run(run_id)
    return held
