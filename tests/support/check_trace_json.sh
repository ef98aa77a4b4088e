#!/bin/sh
# SPDX-License-Identifier: BSL-1.0
# Runs the trace test of test_startup_tools with IMPORTLOCK_TRACE_OUT set, then checks that
# the trace it wrote is JSON (python3 -m json.tool) in the Chrome Trace Event layout: an
# object whose "traceEvents" is a non-empty list of events with "ph", "pid" and "tid", and
# whose complete events ("X") have "ts" and "dur".
#   sh check_trace_json.sh TEST_PROGRAM PYTHON3 OUTPUT_FILE
set -eu
test_program=$1
python=$2
out=$3
rm -f "$out"
IMPORTLOCK_TRACE_OUT="$out" "$test_program" "[trace-json]"
"$python" -m json.tool "$out" >/dev/null
"$python" - "$out" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    trace = json.load(f)
events = trace["traceEvents"]
assert isinstance(events, list) and events, "no traceEvents"
for e in events:
    assert {"ph", "pid", "tid", "name"} <= e.keys(), e
    if e["ph"] == "X":
        assert e["ts"] >= 0 and e["dur"] >= 0, e
spans = sum(1 for e in events if e["ph"] == "X")
print(f"check_trace_json: {sys.argv[1]}: valid JSON, {len(events)} events, {spans} spans")
PY
