#!/usr/bin/env bash
# The paper's table for ResNet-18 on CIFAR-10: FlipOut, GlobalMagnitude, Random and SNIP at 99.9%
# sparsity and Hoyer-Square (lambda 1e-4), seeds 0, 1 and 2, all into runs/resnet18_cifar10.
# Arguments as for vgg19_cifar10.sh (--dry-run; anything else goes to main.py).
source "$(dirname "$0")/common.sh"
add_table resnet18 cifar10 1e-4 resnet18_cifar10
run_all runs/resnet18_cifar10
