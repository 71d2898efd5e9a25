#!/usr/bin/env bash
# Sets up, starts the sandbox and the webhook receiver, runs the nightly_sync job once on the embedded defaults
# (SQLite), then serves the Dagster UI (webserver + daemon, `dg dev`) on http://127.0.0.1:${DAGSTER_PORT:-3000}.
# `--no-ui` stops after the job.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
set -a; source sync_pipelines/stacks/sandbox.env; set +a
export DAGSTER_HOME="$PWD" SANDBOX_PORT=${SANDBOX_PORT:-8765} WEBHOOK_PORT=${WEBHOOK_PORT:-8766}
export SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT" SANDBOX_CSV_DIR="$PWD/.sync_pipelines/sandbox_csv"
export SLACK_WEBHOOK_URL="$SANDBOX_URL/slack/services/T000SANDBOX/B000SANDBOX/sandbox-slack-secret"
export DAGSTER_WEBSERVER_URL="http://127.0.0.1:${DAGSTER_PORT:-3000}"
mkdir -p .sync_pipelines .dagster
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
.venv/bin/sync-pipelines webhooks --port "$WEBHOOK_PORT" > .sync_pipelines/webhooks.log 2>&1 &
pids+=($!)
.venv/bin/sync-pipelines sandbox --port "$SANDBOX_PORT" --csv-dir "$SANDBOX_CSV_DIR" \
  --webhook-url "http://127.0.0.1:$WEBHOOK_PORT" > .sync_pipelines/sandbox.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fs "$SANDBOX_URL/_sandbox/truth" >/dev/null 2>&1 && break
  sleep 0.2
done
.venv/bin/sync-pipelines sync
if [ "${1:-}" != "--no-ui" ]; then
  echo "Dagster UI: $DAGSTER_WEBSERVER_URL (Ctrl-C stops it, the sandbox and the webhook receiver)"
  .venv/bin/dg dev -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"  # the project of pyproject.toml's [tool.dg]
fi
