#!/usr/bin/env bash
# Instructions per call of a round-trip case, counted by callgrind: a
# measure that repeats exactly, where timings on a shared machine do not.
# usage: benchmarks/instructions.sh CASE [RUNS]   (e.g. call-seq 5)
# Prints stock's and ampcore's instructions per call and their ratio; each
# is the difference between RUNS runs of the case and none, so set-up and
# imports cancel out.
set -euo pipefail
case_name=$1 runs=${2:-5}
# str and bytes hashes are salted per process, and dict probing with them:
# a fixed salt makes the count repeat exactly (a changed salt moves it by
# up to 5 %).
export PYTHONHASHSEED=${PYTHONHASHSEED:-0}
here=$(cd "$(dirname "$0")" && pwd)
count() {  # $1: side, $2: runs -> total instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -P -c "
import sys; sys.path.insert(0, '$here')
import workloads
w = workloads.CASES_BY_NAME['$case_name'].setup('$1')
w.run()
for _ in range($2):
    w.run()
" 2>&1 | awk '/refs:/ {gsub(",", "", $NF); print $NF}'
}
per_call() {  # $1: side
    echo $(( ($(count "$1" "$runs") - $(count "$1" 0)) / (runs * $(python -c "
import sys; sys.path.insert(0, '$here'); import workloads
print(workloads.CASES_BY_NAME['$case_name'].items)")) ))
}
stock=$(per_call stock)
core=$(per_call ampcore)
python -c "print('$case_name: stock %d, ampcore %d instructions a call: %.1fx' % ($stock, $core, $stock / $core))"
