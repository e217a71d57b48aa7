"""Files that run code when they are unpickled without care: what a colleague's file could hold.

Each gadget, unpickled by a careless reader, creates `marker`; a test then asserts that the
marker does not exist. `Call` pickles as a call of a function, so that calls nest: the result
of one is the function or an argument of the next, as in `getattr(__import__("os"),
"system")("touch marker")`.
"""

import argparse
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.fx.graph_module import reduce_graph_module


class Call:
    """Pickles as `function(*args)`; callable itself, so that it may stand for a function."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)

    def __call__(self, *args):
        raise AssertionError("a gadget stands for a call in a pickle only")


def creates(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def graph_module(code: str, modules: dict | None = None, import_block: str = "") -> Call:
    """A pickled GraphModule as torch writes one (reduce_graph_module), with `code` as its
    forward: torch's own loader runs `import_block + code`."""
    body = {"_code": code, "_modules": modules or {}, "_parameters": {}, "_buffers": {}}
    return Call(reduce_graph_module, body, import_block)


def hooked_layer() -> nn.Module:
    """A layer whose forward hook is a class of the allow-list: no code, but never an export's."""
    layer = nn.Linear(2, 2)
    layer.register_forward_hook(nn.Identity)
    return layer


# what a codegen would print into getattr(self, "NAME") unescaped
INJECTED_NAME = 'x"),getattr(__import__("os"),"system")("touch {marker}"),("'

# name -> the object whose pickle would create `marker` (or, for the last ones, is simply no
# file of this tool's)
GADGETS: dict[str, Callable[[Path], object]] = {
    "exec": lambda marker: Call(exec, creates(marker)),
    "eval": lambda marker: Call(eval, creates(marker)),
    "__import__ and a getattr gadget": lambda marker: Call(
        Call(getattr, Call(__import__, "os"), "system"), f"touch {marker}"
    ),
    "os.system": lambda marker: Call(os.system, f"touch {marker}"),
    "subprocess": lambda marker: Call(subprocess.call, ["touch", str(marker)]),
    "a method of a class outside the list": lambda marker: Call(Path.touch, marker),
    "a class outside the list": lambda marker: Call(argparse.Namespace),
    "torch.load of another file": lambda marker: Call(torch.load, str(marker)),
    "fx code at module level": lambda marker: graph_module(
        f"\n{creates(marker)}\ndef forward(self, x):\n    return x\n"
    ),
    "fx import block": lambda marker: graph_module(
        "\ndef forward(self, x):\n    return x\n", import_block=f"{creates(marker)}\n"
    ),
    "fx forward calling open": lambda marker: graph_module(
        f"\ndef forward(self, x):\n    {creates(marker)}\n    return x\n"
    ),
    "fx forward importing os": lambda marker: graph_module(
        "\ndef forward(self, x):\n"
        f"    getattr(__import__('os'), 'system')('touch {marker}')\n    return x\n"
    ),
    "fx forward reaching globals": lambda marker: graph_module(
        "\ndef forward(self, x):\n    g = x.__class__.__init__.__globals__\n    return x\n"
    ),
    "fx layer name printed into code": lambda marker: graph_module(
        "\ndef forward(self, x):\n    return x\n",
        {INJECTED_NAME.format(marker=marker): nn.Linear(2, 2)},
    ),
    "fx layer with a hook": lambda marker: graph_module(
        "\ndef forward(self, x):\n    hooked = self.hooked(x)\n    return hooked\n",
        {"hooked": hooked_layer()},
    ),
}


def write_gadget(path: Path, name: str, marker: Path, inside: dict | None = None) -> None:
    """`path` holding gadget `name`: as the whole file, or as a value of the dict `inside`
    (a checkpoint or an export otherwise intact)."""
    gadget = GADGETS[name](marker)
    torch.save(gadget if inside is None else {**inside, "payload": gadget}, path)
