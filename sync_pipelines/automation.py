"""Schedules and sensors built from the stack file: the nightly batch, per-integration schedules, webhook-driven
runs and run-failure alerts to Slack (freshness is a policy on each extraction asset)."""

import hashlib
import os
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import dagster as dg

from sync_pipelines.assets.extract import extraction_key
from sync_pipelines.connectors import connect
from sync_pipelines.connectors.errors import ConnectorError
from sync_pipelines.echo import echoes
from sync_pipelines.pause import covers, pauses
from sync_pipelines.stack import Integration, Stack
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.webhooks import SCHEMES, mark_processed, read_inbox

WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
# A failure alert gets this many posts per tick, waiting ALERT_BACKOFF_S, then twice that, between them; with the
# per-post timeout they stay within the 60 s Dagster gives a sensor tick.
ALERT_ATTEMPTS, ALERT_BACKOFF_S, ALERT_TIMEOUT_S = 3, 2.0, 10.0
ALERTED_TAG = "sync_pipelines/failure_alert"  # set on a failed run once its alert is posted
# Events this young that would start a run wait a tick: a tool announces our write-back while its batch is still
# being sent, before the ledger says what we wrote (a person's edit waits as long, well within the minute).
ECHO_SETTLE = timedelta(seconds=5)


def _today(stack: Stack) -> str:
    return datetime.now(ZoneInfo(stack.timezone)).strftime("%Y-%m-%d")


def nightly_schedule(stack: Stack, job: dg.JobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(job=job, cron_schedule=stack.nightly.cron, execution_timezone=stack.timezone,
                 default_status=dg.DefaultScheduleStatus.RUNNING, name="nightly_sync_schedule",
                 description=f"Every integration at {stack.nightly.cron} ({stack.timezone}).")
    def _nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        """Runs while any integration is not paused: a paused one's write-backs and actions hold themselves."""
        held = pauses(stack.warehouse.url)
        if stack.integrations and all(i.name in held for i in stack.integrations):
            return dg.SkipReason("every integration is paused: " + "; ".join(p.describe() for p in held.values()))
        day = context.scheduled_execution_time.astimezone(ZoneInfo(stack.timezone)).strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"nightly-{day}", partition_key=day)

    return _nightly


def integration_selection(stack: Stack, integration: Integration) -> dg.AssetSelection:
    """An integration's extractions and everything downstream of them (staging, golden, write-back, actions)."""
    keys = [extraction_key(t, s) for t in integration.tools for s, stream in stack.tools[t].streams.items()
            if not integration.entities or stream.entity in integration.entities]
    return dg.AssetSelection.assets(*keys).downstream()


def integration_schedules(stack: Stack, job: dg.JobDefinition) -> list[dg.ScheduleDefinition]:
    """A schedule for each integration whose cron differs from the nightly batch (the batch already covers it)."""
    schedules = []
    for integration in stack.integrations:
        cron = integration.trigger.schedule
        if not cron or cron == stack.nightly.cron:
            continue

        def _evaluate(context: dg.ScheduleEvaluationContext,
                      integration=integration) -> dg.RunRequest | dg.SkipReason:
            if held := pauses(stack.warehouse.url).get(integration.name):
                return dg.SkipReason(held.describe())
            day = context.scheduled_execution_time.astimezone(ZoneInfo(stack.timezone)).strftime("%Y-%m-%d")
            keys = integration_selection(stack, integration).resolve(context.repository_def.asset_graph)
            return dg.RunRequest(run_key=f"{integration.name}-{context.scheduled_execution_time.isoformat()}",
                                 partition_key=day, asset_selection=list(keys))

        schedules.append(dg.ScheduleDefinition(
            name=f"{integration.name}_schedule", job=job, cron_schedule=cron, execution_timezone=stack.timezone,
            execution_fn=_evaluate, default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"{integration.purpose} ({cron})",
        ))
    return schedules


def webhook_sensor(stack: Stack, job: dg.JobDefinition) -> dg.SensorDefinition:
    """Turn new inbox events into one small run that syncs the tools they came from (incremental reads fetch only
    the changed records; write-back sends only what differs)."""

    @dg.sensor(job=job, name="webhook_inbox_sensor", minimum_interval_seconds=5,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Near real time: events from `sync-pipelines webhooks` trigger a sync of their tools.")
    def _inbox(context: dg.SensorEvaluationContext):
        """Reads every unprocessed event, not those past an id: PostgreSQL takes ids at INSERT and commits out of
        order, so an event can land below an id already read. The cursor holds the ids of the last tick's request;
        Dagster stores it only once that request is submitted, so they are marked processed one tick later. Events
        that are the echo of our own write-backs, or concern only paused integrations, start no run: they are
        marked processed at once, with why."""
        url = stack.warehouse.url
        mark_processed(url, [int(i) for i in (context.cursor or "").split(",") if i])
        events = read_inbox(url)
        skipped = _skipped_events(stack, events)
        for why, ids in skipped.items():
            mark_processed(url, ids, skipped=why)
        held = {i for ids in skipped.values() for i in ids}
        events = [e for e in events if e["id"] not in held]
        if events and all(datetime.now(timezone.utc) - e["received_at"] < ECHO_SETTLE for e in events):
            context.update_cursor("")
            return dg.SkipReason(f"{len(events)} webhook event(s) received in the last {ECHO_SETTLE.seconds} s "
                                 "wait a tick, in case they are the echo of a write-back still being sent")
        batch = ",".join(str(e["id"]) for e in events)
        context.update_cursor(batch)
        if not events:
            return dg.SkipReason("; ".join(f"{len(ids)} webhook event(s): {why}" for why, ids in skipped.items())
                                 or "no unprocessed webhook events")
        vendors = {e["tool"] for e in events}
        tools = sorted(name for name, tool in stack.tools.items() if tool.kind in vendors)
        keys = [extraction_key(t, s) for t in tools for s in stack.tools[t].streams]
        if not keys:  # an empty selection would run the whole job: events of tools this stack does not read
            return dg.SkipReason(f"webhook events of {', '.join(sorted(vendors))}, which no tool of the stack reads")
        selection = dg.AssetSelection.assets(*keys).downstream().resolve(context.repository_def.asset_graph)
        digest = hashlib.sha256(batch.encode()).hexdigest()[:16]  # same events, same key: Dagster requests it once
        return dg.RunRequest(run_key=f"inbox-{events[-1]['id']}-{digest}", partition_key=_today(stack),
                             asset_selection=list(selection),
                             tags={"sync_pipelines/trigger": "webhook", "sync_pipelines/events": str(len(events))})

    return _inbox


def _skipped_events(stack: Stack, events: list[dict]) -> dict[str, list[int]]:
    """Why events start no run → their ids: our own write-backs' echo, or only paused integrations concerned (an
    event of a stream no integration covers still runs)."""
    if not events:
        return {}
    held = pauses(stack.warehouse.url)
    paused: dict[str, list[int]] = {}
    for event in events:
        scheme = SCHEMES.get(event["tool"])
        stream = scheme.streams.get(event["object_type"]) if scheme else None
        concerned = {i.name for name, tool in stack.tools.items() if tool.kind == event["tool"] and stream in tool.streams
                     for i in stack.integrations if covers(i, name, {tool.streams[stream].entity})}
        if concerned and concerned <= set(held):
            paused.setdefault(f"paused: {', '.join(sorted(concerned))}", []).append(event["id"])
    waiting = [e for e in events if e["id"] not in {i for ids in paused.values() for i in ids}]
    warehouse = Warehouse(stack, stack.warehouse.url)
    try:
        ours = sorted(echoes(stack, warehouse, waiting))
    finally:
        warehouse.engine.dispose()
    return {**({"the echo of our own write-back": ours} if ours else {}), **paused}


def _integrations_of(stack: Stack, step_keys: list[str]) -> list[str]:
    tools = {key.split("__")[0] for key in step_keys}
    return [i.name for i in stack.integrations if tools & set(i.tools)] or ["core"]


class AlertNotDelivered(dg.DagsterError):
    """Slack could not take a failure alert. A Dagster error, so that it passes the run-status sensor's user-code
    boundary: the tick fails, showing this, and its cursor is not stored, so the next tick alerts the run again
    (any other exception fails the tick but moves the cursor past the run, and the alert is lost)."""


def failure_alert_sensor(stack: Stack) -> dg.SensorDefinition:
    """One Slack message per failed run: the integrations touched, the failing steps, the error and a link.

    While Slack cannot be reached, every tick fails naming the run and the cause, and the alert is posted by the
    first tick after Slack is back. A run is tagged once its alert is posted, so a tick evaluating it again (one
    that failed on a later run, or whose cursor was not stored) does not post it twice."""
    slack = next((name for name, tool in stack.tools.items() if tool.kind == "slack"), None)

    @dg.run_failure_sensor(name="slack_on_run_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                           monitor_all_code_locations=False)
    def _alert(context: dg.RunFailureSensorContext) -> None:
        if slack is None or ALERTED_TAG in context.dagster_run.tags:
            return
        failures = [e for e in context.get_step_failure_events()]
        steps = [e.step_key for e in failures]
        error = failures[0].step_failure_data.error.message.strip().splitlines()[-1] if failures else \
            (context.failure_event.message or "run failed")
        link = f"{os.environ.get(WEBSERVER_URL_ENV, 'http://127.0.0.1:3000').rstrip('/')}/runs/{context.dagster_run.run_id}"
        text = (f":rotating_light: sync failed: {', '.join(_integrations_of(stack, steps))}\n"
                f"job {context.dagster_run.job_name}, step(s) {', '.join(steps) or '—'}\n{error[:500]}\n{link}")
        _post_alert(context, stack, slack, text)
        context.instance.add_run_tags(context.dagster_run.run_id, {ALERTED_TAG: "posted"})

    return _alert


def _post_alert(context: dg.RunFailureSensorContext, stack: Stack, slack: str, text: str) -> None:
    """Post with ALERT_ATTEMPTS tries, else log and raise AlertNotDelivered with the last cause (which the connector
    has stripped of the webhook URL). The connector sends a post once, as a failed one may still have arrived;
    trying again here risks such a rare double rather than losing the alert."""
    tool = stack.tools[slack]
    credentials = {k: os.environ.get(env, "") for k, env in tool.credentials.items()}
    for attempt in range(ALERT_ATTEMPTS):
        if attempt:
            time.sleep(ALERT_BACKOFF_S * 2 ** (attempt - 1))
        try:
            with connect("slack", tool.base_url, credentials, name=slack, credential_env=dict(tool.credentials),
                         timeout=ALERT_TIMEOUT_S) as connector:
                [sent] = connector.write("messages", [{"text": text}])
        except ConnectorError as exc:
            sent = {"ok": False, "error": str(exc)}
        if sent["ok"]:
            return
    message = (f"{slack}: the failure alert for run {context.dagster_run.run_id} was not delivered after "
               f"{ALERT_ATTEMPTS} attempts, the next tick tries again; last error: {sent['error']}")
    context.log.error(message)
    raise AlertNotDelivered(message)
