#!/usr/bin/env bash
# Every GPU figure in one queue that runs in the background on the GPU machine, so that the short runs which carry
# MPNet's parts (one per run, 64 MiB a run) overlap with the work instead of holding the card idle.
#
#   run 1 (carry .gpu):   setsid -f bash bench/gpu_queue.sh /tmp/results >/dev/null 2>&1 </dev/null
#   runs 2-5 (carry .gpu-mpnet/parts.json and one part each, each within 30 s of the last):  cat /tmp/results/queue.log
#   later runs:           sleep N; tar czf $OUT/results.tgz -C /tmp/results .
#
# The pieces run in the order given by PIECES (default below), one after another, so each one's seconds are its
# own: `attention` (what cuDNN's attention plans cost a training run: the gpu preset four ways, with and without
# cuDNN, widths rounded to 8 or 64 tokens), `recipe` (the gpu preset's model alone: `critic train --preset gpu`, its
# accuracy and "not sure" on the test split), `floor` (the bare-loop floor alone, with and without the 2-D mask
# transformers reads back on the host), `profile` (where critic's step time goes, against that floor), `suite`
# (throughput against Trainer, the gpu preset's recipe, scoring against the pipeline and each stage's rate, fp16,
# the bare-loop floor), `compiled` (throughput under torch.compile), `mpnet` (MPNet's rows: MPNET_ROWS, by default
# mpnet-4ep, mpnet-windows, distill-oof, mpnet-ensemble and mpnet-mlm; it waits up to MPNET_WAIT s for the parts),
# or any row of gpu_recipe.py. MPNet's rows also run as soon as every part has arrived, between any two pieces. The
# default is what the H200 sessions so far left unmeasured, most wanted first (`attention` first: its minutes
# cover the parts' journey; the session of 2026-12-04 measured floor, profile, the mpnet row and pretrain-warm).
# Each piece writes RESULTS/NAME.json (after every step or row) and RESULTS/NAME.log; RESULTS/queue.log says when
# each started and ended. ARTIFACTS, PARTS and PYTHON override the folders and python; arguments after RESULTS go
# to every piece (--smoke: tiny, on the CPU, to check the queue here).
set -u
results=${1:?usage: gpu_queue.sh RESULTS [ARGS FOR EVERY PIECE]}
shift
extra=("$@")
artifacts=${ARTIFACTS:-.gpu}
parts=${PARTS:-.gpu-mpnet}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$results"

say() { echo "$(date +%T) $*" >>"$results/queue.log"; }

piece() {  # piece NAME SCRIPT ARGS...
    local name=$1
    shift
    say "start $name"
    "$py" "$@" "${extra[@]}" --out "$results/$name.json" >/dev/null 2>"$results/$name.log"
    say "end $name (exit $?)"
}

mpnet_done=0
mpnet_when_ready() {  # the MPNet rows, once every part has arrived (join checks each part's sha256)
    [ "$mpnet_done" = 1 ] && return 0
    local encoder
    encoder=$("$py" bench/gpu_suite.py join "$parts" 2>>"$results/join.log") || return 1
    mpnet_done=1
    local rows=${MPNET_ROWS:-mpnet-4ep mpnet-windows distill-oof mpnet-ensemble mpnet-mlm}
    # shellcheck disable=SC2086  # the rows are words
    piece mpnet bench/gpu_recipe.py run --artifacts "$artifacts" --rows $rows --mpnet "$encoder"
}

run_piece() {
    case $1 in
    suite) piece suite bench/gpu_suite.py run --artifacts "$artifacts" \
        --steps train_throughput recipe scoring fp16 bare_loop ;;
    recipe) piece recipe bench/gpu_suite.py run --artifacts "$artifacts" --steps recipe ;;
    attention) piece attention bench/gpu_suite.py run --artifacts "$artifacts" --steps attention ;;
    floor) piece floor bench/gpu_suite.py run --artifacts "$artifacts" --steps bare_loop ;;
    profile) piece profile bench/gpu_suite.py run --artifacts "$artifacts" --steps profile ;;
    compiled) piece compiled bench/gpu_suite.py run --artifacts "$artifacts" --steps train_throughput bare_loop compiled ;;
    mpnet)
        if [ ! -f "$parts/parts.json" ]; then  # no transport under way: nothing to wait for
            say "mpnet: no $parts/parts.json, skipped"
            return
        fi
        local waited=0
        until mpnet_when_ready || [ "$waited" -ge "${MPNET_WAIT:-120}" ]; do
            sleep 5
            waited=$((waited + 5))
        done
        [ "$mpnet_done" = 1 ] || say "mpnet: its parts did not all arrive in ${MPNET_WAIT:-120} s (join.log)" ;;
    *) piece "$1" bench/gpu_recipe.py run --artifacts "$artifacts" --rows "$1" ;;
    esac
}

if command -v nvidia-smi >/dev/null; then  # the SMs' busy share each second: is the card waiting for the host?
    nvidia-smi dmon -s u -d 1 >"$results/gpu-utilization.log" 2>&1 &
    dmon=$!
    trap 'kill $dmon 2>/dev/null' EXIT
fi
say "queue on $(hostname): $("$py" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")')"
for name in ${PIECES:-attention suite mpnet compiled}; do
    run_piece "$name"
    mpnet_when_ready
done
say "queue done"
