"""The five commands of the original README, verbatim, as argv for main.py: the runs this
reimplementation must accept with their original spellings and reproduce (tests/test_cli.py parses
them, tests/test_seed_commands.py runs them shrunk, tests/test_golden.py guards what they
compute)."""

import shlex

SEED_COMMANDS = r"""
python main.py --model vgg19 --dataset cifar10 -bs 128 -e 350 -lr 0.1 \
--opt sgd --momentum 0.9 --reg_type wdecay --lambda 5e-4 --use_scheduler \
--milestones 150 250 \
--prune_criterion flipout --flipout_p 2 \
--prune_freq 32 --prune_rate 0.5 \
--noise --noise_scale_factor 1 \
--comment="test flipout" \
--logdir=vgg19/

python main.py --model vgg19 --dataset cifar10 -bs 128 -e 350 -lr 0.1 \
--opt sgd --momentum 0.9 --reg_type wdecay --lambda 5e-4 --use_scheduler \
--milestones 150 250 \
--prune_criterion global_magnitude --prune_freq 32 --prune_rate 0.5 \
--comment="test global magnitude" \
--logdir=vgg19/

python main.py --model vgg19 --dataset cifar10 -bs 128 -e 350 -lr 0.1 \
--opt sgd --momentum 0.9 --reg_type wdecay --lambda 5e-4 --use_scheduler \
--milestones 150 250 \
--prune_criterion random --prune_freq 32 --prune_rate 0.5 \
--comment="test random" \
--logdir=vgg19/

python main.py --model vgg19 --dataset cifar10 -bs 128 -e 350 -lr 0.1 \
--opt sgd --momentum 0.9 --reg_type wdecay --lambda 5e-4 --use_scheduler \
--milestones 150 250 \
--prune_criterion snip --snip_sparsity 0.999 \
--comment="test snip" \
--logdir=vgg19/

python main.py --model vgg19 --dataset cifar10 -bs 128 -e 500 -lr 0.1 \
--opt sgd --momentum 0.9 --reg_type wdecay --lambda 5e-4 --use_scheduler \
--milestones 150 250 \
--add_hs --hoyer_lambda 6e-5 \
--prune_criterion threshold --magnitude_threshold 1e-4 \
--prune_freq 350 --stop_hoyer_at 350 \
--comment="test hoyer-square" \
--logdir=vgg19/
"""


def seed_commands() -> list[list[str]]:
    """Each command as argv for main.py (without `python main.py`)."""
    blocks = SEED_COMMANDS.replace("\\\n", " ").strip().split("\n\n")
    return [shlex.split(block)[2:] for block in blocks]
