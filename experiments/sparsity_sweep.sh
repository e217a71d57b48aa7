#!/usr/bin/env bash
# FlipOut and GlobalMagnitude along the seed README's sparsity ladder: 350 epochs, rate 0.5,
# prune_freq 117 / 70 / 50 / 39 / 32 -> 75% / 93.75% / 98.44% / 99.61% / 99.9%, seeds 0-2.
# MODEL and DATASET choose the network (default vgg19 on cifar10); the runs go to
# runs/<model>_<dataset>_sweep, and the report plots accuracy against sparsity.
source "$(dirname "$0")/common.sh"
MODEL="${MODEL:-vgg19}"
DATASET="${DATASET:-cifar10}"
LOGDIR="${MODEL}_${DATASET}_sweep"
for seed in $SEEDS; do
    for freq in 117 70 50 39 32; do
        common=(-m "$MODEL" -d "$DATASET" "${RECIPE[@]}" -e 350 --seed "$seed"
                --logdir "$LOGDIR" --prune_freq "$freq")
        add "${common[@]}" "${FLIPOUT[@]}" --comment "flipout freq $freq seed $seed"
        add "${common[@]}" "${GLOBAL_MAGNITUDE[@]}" --comment "global magnitude freq $freq seed $seed"
    done
done
run_all "runs/$LOGDIR"
