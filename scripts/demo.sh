#!/usr/bin/env bash
# Sets up, starts the sandbox, runs the nightly_sync job once on the embedded defaults (SQLite), then serves the
# Dagster UI (webserver + daemon) on http://127.0.0.1:${DAGSTER_PORT:-3000}. `--no-ui` stops after the job.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
set -a; source sync_pipelines/stacks/sandbox.env; set +a
export DAGSTER_HOME="$PWD" SANDBOX_PORT=${SANDBOX_PORT:-8765}
export SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT" SANDBOX_CSV_DIR="$PWD/.sync_pipelines/sandbox_csv"
export SLACK_WEBHOOK_URL="$SANDBOX_URL/slack/services/T000SANDBOX/B000SANDBOX/sandbox-slack-secret"
mkdir -p .sync_pipelines .dagster
.venv/bin/sync-pipelines sandbox --port "$SANDBOX_PORT" --csv-dir "$SANDBOX_CSV_DIR" > .sync_pipelines/sandbox.log 2>&1 &
sandbox_pid=$!
trap 'kill $sandbox_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "$SANDBOX_URL/_sandbox/truth" >/dev/null 2>&1 && break
  sleep 0.2
done
.venv/bin/sync-pipelines sync
if [ "${1:-}" != "--no-ui" ]; then
  echo "Dagster UI: http://127.0.0.1:${DAGSTER_PORT:-3000} (Ctrl-C stops it and the sandbox)"
  .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"
fi
