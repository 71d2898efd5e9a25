"""``sync-pipelines pause`` / ``resume``: stop an integration first when it goes wrong, and start it again."""

from __future__ import annotations

import getpass
import sys

import click


def _stack_with(integration: str):
    """The stack file, once it declares ``integration``; else exit 2 naming it and the stack's integrations."""
    from sync_pipelines.cli import _stack_or_exit, console
    from sync_pipelines.pause import UnknownIntegration, integration_named

    stack = _stack_or_exit(None)
    try:
        integration_named(stack, integration)
    except UnknownIntegration as exc:
        console.print(f"[red]{exc}[/red]")
        sys.exit(2)
    return stack, console


def _held_steps(stack, name: str) -> list[str]:
    """The write-backs and actions a pause of ``name`` holds."""
    import dagster as dg

    from sync_pipelines.pause import integration_named
    from sync_pipelines.reports import belongs_to

    integration = integration_named(stack, name)
    steps = [f"write-back to {d.tool} {d.stream}" for d in stack.destinations
             if belongs_to(stack, integration, dg.AssetKey([d.tool, f"{d.entity}_writeback"]))]
    return steps + [f"action {a.name}" for a in stack.actions
                    if belongs_to(stack, integration, dg.AssetKey([a.create.tool, a.name]))]


@click.command()
@click.argument("integration")
@click.option("--reason", required=True, help="Why it is stopped (shown in the UI, catalog and review).")
@click.option("--by", default=getpass.getuser, show_default="the current user", help="Who stops it.")
def pause(integration: str, reason: str, by: str) -> None:
    """Stop INTEGRATION: its schedules, webhook runs, write-backs and actions do nothing until `resume`."""
    from sync_pipelines.pause import pause as stop

    stack, console = _stack_with(integration)
    stopped = stop(stack.warehouse.url, stack, integration, by=by, reason=reason)
    console.print(f"[yellow]{stopped.describe()}[/yellow]")
    console.print(f"held until `sync-pipelines resume {integration}`: its schedules, webhook runs, "
                  f"{', '.join(_held_steps(stack, integration)) or 'no write-back or action'}")


@click.command()
@click.argument("integration")
def resume(integration: str) -> None:
    """Start INTEGRATION again: the next run writes what its write-backs and actions held back."""
    from sync_pipelines.pause import resume as restart

    stack, console = _stack_with(integration)
    ended = restart(stack.warehouse.url, stack, integration)
    if ended is None:
        console.print(f"{integration} was not paused")
        return
    console.print(f"[green]resumed {integration}[/green] ({ended.describe()}); the next run writes what was held "
                  "back")
