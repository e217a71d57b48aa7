"""What leaves the tool: a pruned run's network as a file others can use, and what it costs.

    python -m export RUN_DIR --to FORMAT OUT     # formats.py: compact, sparse_runtime, dense, ...
    python -m export.inspect RUN_DIR             # inspect.py: layers, FLOPs, sizes
    from export import load                      # any export back as a network in eval mode

compact.py cuts the channels pruning made useless out of the network (torch.fx); sparse_runtime.py
runs what is left with sparse CPU kernels; formats.py writes and reads every format; artifacts.py
reads a run directory; weights.py reads any weights file for `main.py --init_from`; peek.py
tells what a file holds without building any of it; onnx.py writes the compact network as ONNX,
checks it with onnxruntime and runs it back; flops.py counts multiply-accumulates. This
room stands on pruning/, models/ and utils/, never above them.
"""

from export.formats import load

__all__ = ["load"]
