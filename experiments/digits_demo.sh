#!/usr/bin/env bash
# The paper's table in miniature, on scikit-learn's bundled digits (no download): LeNet-300-100,
# 20 epochs, FlipOut, GlobalMagnitude, Random, SNIP and Hoyer-Square at 99%+ sparsity, seeds 0-2,
# plus FlipOut and GlobalMagnitude at lower sparsities for the accuracy-vs-sparsity plot. Runs two
# at a time; about 3 minutes on 2 CPU cores. `make demo` runs this. Starts from an empty runs/demo.
JOBS="${JOBS:-2}"
RUN_OUTPUT="${RUN_OUTPUT:-brief}"
source "$(dirname "$0")/common.sh"
if [ "$DRY_RUN" = 0 ]; then rm -rf runs/demo; fi

# Small runs: one thread each, since two run side by side on two cores.
export OMP_NUM_THREADS=1
for seed in $SEEDS; do
    # lr 0.05: at 0.1, FlipOut's gradient noise made about one seed in eight diverge before the
    # first prune (checked over seeds 0-7); at 0.05 none did
    common=(-m lenet300 -d digits -e 20 -bs 128 -lr 0.05 --opt sgd --momentum 0.9
            --reg_type wdecay --lambda 5e-4 --seed "$seed" --num_workers 0 --quiet --logdir demo)
    # 20 epochs, half of the live weights every 2 epochs: 9 prunes, 99.80% sparsity
    add "${common[@]}" "${FLIPOUT[@]}" --prune_freq 2 --comment "flipout seed $seed"
    add "${common[@]}" "${GLOBAL_MAGNITUDE[@]}" --prune_freq 2 --comment "global magnitude seed $seed"
    add "${common[@]}" "${RANDOM_PRUNING[@]}" --prune_freq 2 --comment "random seed $seed"
    add "${common[@]}" --prune_criterion snip --snip_sparsity 0.998 --comment "snip seed $seed"
    # Hoyer-Square's sparsity follows from lambda and the threshold; these reach about 99.5%
    add "${common[@]}" --add_hs --hoyer_lambda 5e-3 --clip_grad --max_norm 5 \
        --prune_criterion threshold --magnitude_threshold 0.15 --prune_freq 5 --stop_hoyer_at 15 \
        --comment "hoyer-square seed $seed"
    # the sparsity ladder for the plot: 2, 4 and 6 prunes -> 75%, 93.75%, 98.44%
    for freq in 7 4 3; do
        add "${common[@]}" "${FLIPOUT[@]}" --prune_freq "$freq" --comment "flipout freq $freq seed $seed"
        add "${common[@]}" "${GLOBAL_MAGNITUDE[@]}" --prune_freq "$freq" \
            --comment "global magnitude freq $freq seed $seed"
    done
done
run_all runs/demo
