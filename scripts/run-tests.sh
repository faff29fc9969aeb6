#!/usr/bin/env bash
# Runs the test command given (make test's `swift test`) under a time limit, so a test that hangs fails the run
# within TEST_TIME_LIMIT seconds (default 1200) instead of taking CI's whole budget, and names the tests that
# were still running then.
#
# - The output is line-buffered (stdbuf): written to a pipe or a file, the test runner's output is otherwise
#   block-buffered, and the last lines before a hang — the ones that say which tests started — stay in its buffer.
# - It goes to a file that is followed, not through a pipe: a process left behind holding the pipe would keep
#   the run from ending.
# - The command runs in a process group of its own, which is stopped as a whole: the runner, the test
#   processes and whatever they started.
set -uo pipefail
limit=${TEST_TIME_LIMIT:-1200}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
setsid stdbuf -oL -eL "$@" > "$log" 2>&1 &
pid=$!
# Ctrl-C or a stop of make reaches this script only (the group is in a session of its own): pass it on.
trap 'kill -TERM -- "-$pid" 2>/dev/null; exit 130' INT TERM
tail -n +1 -f --pid="$pid" "$log" &
follower=$!
waited=0
while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$limit" ]; do
    sleep 1
    waited=$((waited + 1))
done
if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    wait "$follower"
    echo
    echo "The tests did not finish within ${limit} s (TEST_TIME_LIMIT) and were stopped. Started and not finished:"
    python3 - "$log" <<'EOF'
import re, sys
from collections import Counter
running = Counter()
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    match = re.match(r"^\S+ Test (?!case passing|run )(.+?)(?: with \d+ test cases?)? (started\.|passed after|failed after)", line)
    if match:
        running[match.group(1)] += 1 if match.group(2) == "started." else -1
for name, count in sorted(running.items()):
    if count > 0:
        print("  " + name)
EOF
    exit 124
fi
wait "$pid"
status=$?
wait "$follower"
exit "$status"
