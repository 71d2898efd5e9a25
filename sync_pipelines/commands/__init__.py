"""CLI commands kept in modules of their own, each registered on `sync_pipelines.cli.main`."""
