#!/usr/bin/env bash
# The paper's table for VGG-19 on CIFAR-10: FlipOut, GlobalMagnitude, Random and SNIP at 99.9%
# sparsity and Hoyer-Square (lambda 6e-5), seeds 0, 1 and 2, all into runs/vgg19_cifar10.
#   experiments/vgg19_cifar10.sh                   # the full table (15 runs of 350-500 epochs)
#   experiments/vgg19_cifar10.sh --dry-run         # print the commands
#   experiments/vgg19_cifar10.sh -d synthetic --limit_batches 2 -e 3   # a smoke run of the table
source "$(dirname "$0")/common.sh"
add_table vgg19 cifar10 6e-5 vgg19_cifar10
run_all runs/vgg19_cifar10
