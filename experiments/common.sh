# Shared by the experiment scripts (sourced, not run): the paper's training recipe, the methods of
# its tables, and a runner that prints the commands (--dry-run) or runs them. Runs are written to
# runs/ under the current directory, as when main.py is called directly.
#
# Environment: SEEDS (default "0 1 2"), JOBS (runs at once, default 1), RUN_OUTPUT (full, or brief:
# only each run's last line and warnings), PYTHON (default: the project's .venv if present, else
# python3). Arguments other than --dry-run are appended to every
# main.py command; argparse keeps the last value of a repeated flag, so `-e 3` overrides `-e 350`.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
SEEDS="${SEEDS:-0 1 2}"
JOBS="${JOBS:-1}"
RUN_OUTPUT="${RUN_OUTPUT:-full}"

DRY_RUN=0
EXTRA=()
for argument in "$@"; do
    if [ "$argument" = "--dry-run" ]; then DRY_RUN=1; else EXTRA+=("$argument"); fi
done

# The optimisation recipe shared by every command of the paper (seed README); 350 epochs, 500 for
# Hoyer-Square.
RECIPE=(-bs 128 -lr 0.1 --opt sgd --momentum 0.9 --reg_type wdecay --lambda 5e-4
        --use_scheduler --milestones 150 250)
FLIPOUT=(--prune_criterion flipout --flipout_p 2 --prune_rate 0.5 --noise --noise_scale_factor 1)
GLOBAL_MAGNITUDE=(--prune_criterion global_magnitude --prune_rate 0.5)
RANDOM_PRUNING=(--prune_criterion random --prune_rate 0.5)

COMMANDS=()

# add ARGS...: queue `main.py ARGS... EXTRA...`, shell-quoted.
add() {
    local quoted
    quoted="$(printf '%q ' main.py "$@" ${EXTRA[@]+"${EXTRA[@]}"})"
    COMMANDS+=("${quoted% }")
}

# add_table MODEL DATASET HOYER_LAMBDA LOGDIR: every method of one results table, every seed.
add_table() {
    local model="$1" dataset="$2" hoyer_lambda="$3" logdir="$4" seed
    for seed in $SEEDS; do
        local common=(-m "$model" -d "$dataset" "${RECIPE[@]}" --seed "$seed" --logdir "$logdir")
        add "${common[@]}" -e 350 "${FLIPOUT[@]}" --prune_freq 32 --comment "flipout seed $seed"
        add "${common[@]}" -e 350 "${GLOBAL_MAGNITUDE[@]}" --prune_freq 32 \
            --comment "global magnitude seed $seed"
        add "${common[@]}" -e 350 "${RANDOM_PRUNING[@]}" --prune_freq 32 \
            --comment "random seed $seed"
        add "${common[@]}" -e 350 --prune_criterion snip --snip_sparsity 0.999 \
            --comment "snip seed $seed"
        add "${common[@]}" -e 500 --add_hs --hoyer_lambda "$hoyer_lambda" \
            --prune_criterion threshold --magnitude_threshold 1e-4 \
            --prune_freq 350 --stop_hoyer_at 350 --comment "hoyer-square seed $seed"
    done
}

# run_all REPORT_DIR: print or run the queued commands, then report on REPORT_DIR.
run_all() {
    local report_dir="$1"
    if [ "$DRY_RUN" = 1 ]; then
        printf 'python %s\n' "${COMMANDS[@]}"
        return 0
    fi
    local status=0 command pid pids=()
    # At most JOBS runs at once; a failed run does not stop the others. `wait -n` only throttles:
    # bash remembers every background exit status, which `wait PID` collects at the end.
    for command in "${COMMANDS[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
        # a subshell per run, so that `wait PID` sees the run's own exit status (with pipefail,
        # also through the output filter)
        if [ "$RUN_OUTPUT" = brief ]; then
            (eval "\"\$PYTHON\" \"\$ROOT\"/$command" 2>&1 |
                awk '/^(done|error|warning|interrupted)/') &
        else
            (eval "\"\$PYTHON\" \"\$ROOT\"/$command") &
        fi
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m utils.report "$report_dir" || true
    if [ "$status" != 0 ]; then
        echo "some runs failed or were interrupted; the report lists them" >&2
    fi
    return "$status"
}
