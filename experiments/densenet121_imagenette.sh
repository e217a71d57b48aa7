#!/usr/bin/env bash
# The paper's table for DenseNet-121 on Imagenette: FlipOut, GlobalMagnitude, Random and SNIP at
# 99.9% sparsity and Hoyer-Square (lambda 3e-4), seeds 0, 1 and 2, into runs/densenet121_imagenette.
# Needs ./get_imagenette.sh first. Arguments as for vgg19_cifar10.sh.
source "$(dirname "$0")/common.sh"
add_table densenet121 imagenette 3e-4 densenet121_imagenette
run_all runs/densenet121_imagenette
