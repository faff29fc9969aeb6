#!/usr/bin/env bash
# Runs the test command given (make test's `swift test`) under a time limit, so a test that hangs fails the run
# within TEST_TIME_LIMIT seconds (default 1200) instead of taking CI's whole budget, and names the tests that
# were still running then.
#
# The output is line-buffered (stdbuf): written to a pipe, the test runner's output is otherwise block-buffered,
# and the last lines before a hang — the ones that say which tests started — would stay in its buffer.
set -uo pipefail
limit=${TEST_TIME_LIMIT:-1200}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
stdbuf -oL -eL timeout --kill-after=20 "$limit" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
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
fi
exit "$status"
