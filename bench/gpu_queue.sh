#!/usr/bin/env bash
# Every GPU figure in one queue that runs in the background on the GPU machine, so that the short runs which carry
# MPNet's parts (one per run, 64 MiB a run) overlap with the work instead of holding the card idle.
#
#   run 1 (carry .gpu):            setsid bash bench/gpu_queue.sh /tmp/results >/dev/null 2>&1 </dev/null &
#   runs 2-5 (carry .gpu-mpnet/parts.json and one part each):   cat /tmp/results/queue.log
#   later runs:                    sleep N; cp /tmp/results/*.json /tmp/results/*.log $OUT
#
# Order, by what each figure is worth: the GPU suite (speed against Trainer and the pipeline, the MiniLM recipe,
# fp16) keeping its recipe model; that model scored through windows; MPNet and the MiniLM distilled from it as soon
# as every part has arrived; then the other ablation rows; torch.compile last. Pieces run one after another, so each
# one's seconds are its own. Each piece writes RESULTS/NAME.json (after every step or row) and RESULTS/NAME.log;
# RESULTS/queue.log says when each started and ended. ARTIFACTS, PARTS and PYTHON override the folders and python;
# arguments after RESULTS go to every piece (--smoke: tiny, on the CPU, to check the queue here).
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
    [ "$mpnet_done" = 1 ] && return
    local encoder
    encoder=$("$py" bench/gpu_suite.py join "$parts" 2>>"$results/join.log") || return
    mpnet_done=1
    piece mpnet bench/gpu_recipe.py run --artifacts "$artifacts" --rows mpnet distill --mpnet "$encoder"
}

say "queue on $(hostname): $("$py" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")')"
piece suite bench/gpu_suite.py run --artifacts "$artifacts" --steps train_throughput recipe scoring fp16 \
    --keep "$results/recipe-model"
piece windows bench/gpu_recipe.py run --artifacts "$artifacts" --rows 512-head+tail windows \
    --trained "512-head+tail=$results/recipe-model"
mpnet_when_ready
for row in pretrain candidate 256-head 512-head; do
    piece "$row" bench/gpu_recipe.py run --artifacts "$artifacts" --rows "$row"
    mpnet_when_ready
done
piece compiled bench/gpu_suite.py run --artifacts "$artifacts" --steps train_throughput compiled
mpnet_when_ready
say "queue done"
