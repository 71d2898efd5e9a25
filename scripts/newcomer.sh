#!/usr/bin/env bash
# What a newcomer does, timed: a fresh clone of this checkout's HEAD, the README's first command with --no-ui, then in
# a new shell with a clean environment (nothing exported but PATH and HOME) every CLI command the README lists,
# against the sandbox started with `sync-pipelines sandbox`. Prints each command's time, the Dagster warnings the
# demo printed up to its first summary table, and whether the work tree is still clean. Exit status 1 when any step
# fails. Usage: scripts/newcomer.sh [folder to clone into]
set -uo pipefail
source_repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)/sync_pipelines}"
git clone --quiet "$source_repo" "$work" || exit 1
cd "$work" || exit 1
failed=0
timed() {  # timed NAME COMMAND...: run it, print its time and outcome
  local name=$1 start end status
  shift
  start=$(date +%s.%N)
  "$@" > ".newcomer_$name.log" 2>&1
  status=$?
  end=$(date +%s.%N)
  printf '%-26s %7.1f s  %s\n' "$name" "$(echo "$end - $start" | bc)" "$([ $status -eq 0 ] && echo ok || echo "FAILED ($status)")"
  [ $status -eq 0 ] || { failed=1; tail -5 ".newcomer_$name.log"; }
}
clean_shell() { env -i PATH="$work/.venv/bin:/usr/bin:/bin" HOME="$HOME" bash -c "cd '$work' || exit 1; $*"; }
if curl -fs http://127.0.0.1:8765/_sandbox/truth > /dev/null 2>&1; then
  echo "port 8765 already serves a sandbox: stop it first (its code may not be this checkout's)"; exit 1
fi

timed demo_no_ui ./scripts/demo.sh --no-ui
# Python and Dagster warnings (pip's own notes about this machine's package indexes are not the project's)
warnings=$(awk '/┏/ {exit} {print}' .newcomer_demo_no_ui.log | grep -cE "[A-Za-z]Warning:| - WARNING - ")
clean_shell "sync-pipelines sandbox > .newcomer_sandbox.log 2>&1 & echo \$! > .newcomer_sandbox.pid"
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:8765/_sandbox/truth > /dev/null 2>&1 && break; sleep 0.2; done
day=$(date -u +%Y-%m-%d)
timed validate clean_shell "sync-pipelines validate"
timed plan clean_shell "sync-pipelines plan"
timed sync clean_shell "sync-pipelines sync"
timed backfill clean_shell "sync-pipelines backfill $day $day"
timed review clean_shell "sync-pipelines review"
timed catalog clean_shell "sync-pipelines catalog"
kill "$(cat .newcomer_sandbox.pid)" 2> /dev/null
for _ in $(seq 1 50); do curl -fs http://127.0.0.1:8765/_sandbox/truth > /dev/null 2>&1 || break; sleep 0.2; done
rm -f .newcomer_*.log .newcomer_sandbox.pid
echo "warnings printed by the demo up to its first summary table: $warnings"
dirty=$(git status --porcelain)
echo "git status --porcelain: ${dirty:-empty}"
[ -z "$dirty" ] || failed=1
exit $failed
