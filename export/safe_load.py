"""A compact or sparse_runtime export read back without running any code from the file.

Such an export is a pickled torch.fx GraphModule, and torch rebuilds one by executing the Python
source stored in it (`torch.fx.graph_module.reduce_graph_module`): `torch.load(path,
weights_only=False)` runs whatever a file someone sent holds. `read_module` never does:

- the pickle is read by torch's weights-only unpickler, which admits exactly the globals
  `ALLOWED` names: torch.nn's layers and export/sparse_runtime.py's (what compaction leaves in
  a network), and in place of `reduce_graph_module`, `rebuilt` here. Anything else (exec,
  os.system, a getattr gadget, a class of another library) refuses the file before it is built;
- `rebuilt` reads the stored forward's syntax (ast) into a torch.fx Graph, accepting only what
  torch.fx writes: calls of the network's own layers, of tensor functions of torch (its ATen
  operators, torch.nn.functional, torch.special, torch.linalg, torch.fft), public tensor
  methods, arithmetic, indexing, and constants. torch.fx then generates the forward from that
  graph, so what runs is fx's code for allow-listed nodes, never the file's text;
- the layers are checked to carry no hooks and no forward of their own.

Whatever the file is refused for ends in `Refused`, whose message says why in one line.
"""

import ast
import builtins
import inspect
import io
import math
import operator
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import fx, nn

from export.sparse_runtime import (
    DirectConv2d,
    MaxPool2x2,
    SparseConv2d,
    SparseLinear,
    UnrolledConv2d,
    quiet_csr,
)
from utils.checkpoint import load_weights_only, refused_global, unpickling_reason

# a forward longer than this is not one torch.fx wrote for a network this tool can export
MOST_SOURCE_CHARACTERS = 50_000_000


class Refused(Exception):
    """The file is not an export this tool can read back: the message says why."""


class Unused:
    """Stands in for the tracer class a GraphModule records; loading never uses it."""


def torch_layers() -> dict[str, type]:
    """torch.nn's layer classes by their pickled names: every nn.Module defined in a module of
    torch.nn.modules (torch.fx keeps those whole, so they are what an export is made of)."""
    layers = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("torch.nn.modules."):
            continue
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == name:
                layers[f"{name}.{cls.__qualname__}"] = cls
    return layers


def allowed_globals() -> list[tuple[object, str]]:
    """What an export's pickle may name, beyond the tensors, storages, dtypes and containers
    that torch's weights-only unpickler takes by itself: (object, pickled name)."""
    ours = {
        cls.__name__: cls
        for cls in (SparseConv2d, SparseLinear, UnrolledConv2d, MaxPool2x2, DirectConv2d)
    }
    named = {
        **torch_layers(),
        **{f"export.sparse_runtime.{name}": cls for name, cls in ours.items()},
        # sparse_runtime exports written before the export room existed
        **{f"utils.sparse_runtime.{name}": cls for name, cls in ours.items()},
        "torch.fx.graph_module.reduce_graph_module": rebuilt,
        "torch.fx._symbolic_trace.Tracer": Unused,
    }
    return [(value, name) for name, value in named.items()]


def read_module(file: str | Path | io.BytesIO) -> nn.Module:
    """The module export in `file`, or Refused. Raises what torch raises for a file that is
    not a torch archive at all (the caller words those)."""
    try:
        with torch.serialization.safe_globals(allowed_globals()), quiet_csr():
            # torch checks every CSR tensor of a weights-only load, and says so
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
            module = load_weights_only(file)
    except pickle.UnpicklingError as error:
        if refused_global(error) is None:
            raise  # not a pickle this reader can read: damaged, or no torch file at all
        raise Refused(unpickling_reason(error)) from None
    if not isinstance(module, fx.GraphModule):
        raise Refused(f"it holds a {type(module).__name__}, not a network python -m export wrote")
    check_layers(module)
    return module


HOOKS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)  # fmt: skip


# what torch.fx prints a layer's or tensor's name into the forward it generates, unescaped
NAME = re.compile(r"[A-Za-z0-9_]{1,200}")


def check_names(layer: nn.Module, where: str) -> None:
    for part in ("_modules", "_parameters", "_buffers"):
        for name in getattr(layer, part):
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise Refused(f"{where} holds {name!r}, which is no name a layer or tensor has")


def check_layers(module: nn.Module) -> None:
    """Every layer with plain names, no hook and no callable of its own: a hook or an instance
    attribute shadowing a method would run what the file chose, and fx writes names into the
    code it generates."""
    for name, layer in module.named_modules():
        where = name or "the network"
        check_names(layer, where)
        for hooks in HOOKS:
            if getattr(layer, hooks, None):
                raise Refused(f"{where} carries {hooks}, which no export does")
        for attribute, value in vars(layer).items():
            if attribute not in HOOKS and callable(value) and not isinstance(value, nn.Module):
                raise Refused(f"{where}.{attribute} is a callable, which no export holds")


# -- the GraphModule, from its forward's syntax ------------------------------------------------


def rebuilt(body: object, import_block: object = None) -> fx.GraphModule:
    """What the unpickler calls in place of torch's reduce_graph_module: the GraphModule whose
    attributes are `body`, its graph read from the forward's source without running it. The
    import block, code by definition, is ignored: names resolve to torch's own objects here."""
    if not isinstance(body, dict):
        raise Refused("its network is not stored as torch.fx stores one")
    source = body.get("_code", body.get("code"))
    if not isinstance(source, str) or len(source) > MOST_SOURCE_CHARACTERS:
        raise Refused("its network has no forward that torch.fx wrote")
    root = nn.Module()
    for part in ("_modules", "_parameters", "_buffers"):
        held = body.get(part, {})
        if not isinstance(held, dict):
            raise Refused(f"its network's {part} is not a dict by name")
        getattr(root, part).update(held)
    check_names(root, "the network")
    for name, layer in root._modules.items():
        if not isinstance(layer, nn.Module):
            raise Refused(f"its layer {name!r} is a {type(layer).__name__}, not a layer")
    for name, tensor in [*root._parameters.items(), *root._buffers.items()]:
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise Refused(f"its tensor {name!r} is a {type(tensor).__name__}")
    graph = GraphReader(root).read(source)
    gm = fx.GraphModule(root, graph)
    if "export_info" in body:
        gm.export_info = plain(body["export_info"])
    return gm


def plain(value: object, depth: int = 0) -> object:
    """`value` when it is plain data (what JSON holds, and tuples), else Refused."""
    if depth > 20:
        raise Refused("its export_info is nested too deeply")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return type(value)(plain(item, depth + 1) for item in value)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: plain(item, depth + 1) for key, item in value.items()}
    raise Refused(f"its export_info holds a {type(value).__name__}")


# What the forward may call by name, as torch.fx writes the call.
OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.MatMult: operator.matmul, ast.LShift: operator.lshift,
    ast.RShift: operator.rshift, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
    ast.BitXor: operator.xor, ast.USub: operator.neg, ast.UAdd: operator.pos,
    ast.Invert: operator.invert, ast.Not: operator.not_, ast.Eq: operator.eq,
    ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
}  # fmt: skip
BUILTINS = {name: getattr(builtins, name) for name in (
    "getattr", "len", "int", "float", "bool", "tuple", "list", "min", "max", "abs",
)}  # fmt: skip
# names torch.fx's import block defines for constants it prints
CONSTANTS = {"inf": math.inf, "nan": math.nan}
# torch's tensor operators that read or write files
NOT_TENSOR_FUNCTIONS = {"from_file"}
# the namespaces whose public functions are tensor operations, as fx spells them, each with the
# modules its functions may come from (torch.nn.functional also imports typing and dispatch
# helpers, which are no tensor operation)
FUNCTION_ROOTS = {
    "torch.nn.functional": (F, {"torch.nn.functional", "torch", "torch._C._nn"}),
    "torch._C._nn": (torch._C._nn, None),
    "torch.special": (torch.special, None),
    "torch.linalg": (torch.linalg, None),
    "torch.fft": (torch.fft, None),
    "math": (math, None),
}
EXTRA_FUNCTIONS = {
    "torch._assert": torch._assert,
    # operator's arithmetic only: its attrgetter and methodcaller would reach any attribute
    **{f"operator.{f.__name__}": f for f in [*OPERATORS.values(), operator.getitem]},
}


def tensor_function(dotted: str) -> Any:
    """The function `dotted` names (torch.cat, torch.nn.functional.relu, operator.add), when it
    is a tensor operation a forward may call; else None."""
    if dotted in EXTRA_FUNCTIONS:
        return EXTRA_FUNCTIONS[dotted]
    root, _, name = dotted.rpartition(".")
    if name.startswith("_") or name in NOT_TENSOR_FUNCTIONS:
        return None
    if root == "torch":
        # torch's own namespace holds much besides operators: only ATen's, and
        # torch.functional's (einsum, split, ...), which are tensor maths too
        function = getattr(torch._C._VariableFunctions, name, None)
        if function is None and name in torch.functional.__all__:
            function = getattr(torch.functional, name)
    elif root in FUNCTION_ROOTS:
        namespace, modules = FUNCTION_ROOTS[root]
        function = vars(namespace).get(name)
        if modules is not None and getattr(function, "__module__", None) not in modules:
            return None
    else:
        return None
    if function is None or isinstance(function, type) or inspect.ismodule(function):
        return None
    return function if callable(function) else None


def constant(dotted: str) -> Any:
    """A dtype, memory format, layout or math constant that fx prints by its dotted name."""
    root, _, name = dotted.rpartition(".")
    if root == "torch":
        value = vars(torch).get(name)
        if isinstance(value, torch.dtype | torch.memory_format | torch.layout | torch.qscheme):
            return value
    if root == "math" and name in ("pi", "e", "inf", "nan", "tau"):
        return getattr(math, name)
    raise Refused(f"its forward names {dotted}, which no export does")


def operation(op: ast.AST) -> Any:
    if type(op) not in OPERATORS:
        raise Refused(f"its forward uses {type(op).__name__}, which fx never writes")
    return OPERATORS[type(op)]


def public(name: object) -> bool:
    return isinstance(name, str) and name.isidentifier() and not name.startswith("_")


# Tensor methods no network's forward needs that hand out what is not a tensor's maths: raw
# memory (numpy's arrays, storages, pointers, which other methods could then reach), a tensor
# re-pointed at other memory, or a callable run later (hooks, apply_)
NOT_TENSOR_METHODS = frozenset({
    "numpy", "storage", "untyped_storage", "data_ptr", "set_", "resize_", "resize_as_",
    "share_memory_", "pin_memory", "apply_", "map_", "map2_", "register_hook",
    "register_post_accumulate_grad_hook", "backward", "as_subclass", "tolist",
})  # fmt: skip

# What a forward may read off a value (x.shape, getattr(x, "dtype")): a tensor's data attributes,
# never a method, so that no callable is ever a value of the graph; nor grad_fn, autograd's node.
DATA_ATTRIBUTES = frozenset(
    name
    for name in dir(torch.Tensor)
    if public(name) and not callable(inspect.getattr_static(torch.Tensor, name))
) - {"grad_fn"}


class GraphReader:
    """Turns the source torch.fx wrote for a forward into the Graph it was written from,
    refusing anything else."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.graph = fx.Graph()
        self.names: dict[str, Any] = {}

    def read(self, source: str) -> fx.Graph:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            raise Refused(f"its forward is not Python ({type(error).__name__})") from None
        functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
        if len(tree.body) != 1 or len(functions) != 1 or functions[0].name != "forward":
            raise Refused("its source is not one forward, as torch.fx writes it")
        forward = functions[0]
        if forward.decorator_list:
            raise Refused("its forward is decorated, which torch.fx never writes")
        try:
            self.arguments(forward.args)
            for statement in forward.body:
                self.statement(statement)
        except RecursionError:
            raise Refused("its forward is nested too deeply") from None
        return self.graph

    def arguments(self, args: ast.arguments) -> None:
        if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
            raise Refused("its forward takes arguments torch.fx does not write")
        names = [arg.arg for arg in args.args]
        if names[:1] != ["self"]:
            raise Refused("its forward is not a method")
        defaults = [None] * (len(names) - 1 - len(args.defaults)) + list(args.defaults)
        for name, default in zip(names[1:], defaults, strict=True):
            if default is None:
                self.names[name] = self.graph.placeholder(name)
            else:
                value = self.value(default)
                if isinstance(value, fx.Node):
                    raise Refused("its forward's default is not a constant")
                self.names[name] = self.graph.placeholder(name, default_value=value)

    def statement(self, statement: ast.stmt) -> None:
        if isinstance(statement, ast.Assign):
            if not all(isinstance(target, ast.Name) for target in statement.targets):
                raise Refused("its forward assigns to something other than names")
            value = self.value(statement.value)
            for target in statement.targets:
                self.names[target.id] = value
        elif isinstance(statement, ast.Return) and statement.value is not None:
            self.graph.output(self.value(statement.value))
        elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            pass  # a docstring or a stray string: no effect
        else:
            kind = type(statement).__name__
            raise Refused(f"its forward holds a statement torch.fx never writes ({kind})")

    # -- expressions -------------------------------------------------------------------------

    def value(self, node: ast.expr) -> Any:
        """An fx argument: a Node, a constant, or a container of them."""
        reader = self.READERS.get(type(node))
        if reader is None:
            kind = type(node).__name__
            raise Refused(f"its forward holds an expression torch.fx never writes ({kind})")
        return reader(self, node)

    def constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, bytes):
            raise Refused("its forward holds bytes, which fx never writes")
        return node.value

    def sequence(self, node: ast.Tuple | ast.List) -> tuple | list:
        items = [self.value(item) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items

    def mapping(self, node: ast.Dict) -> dict:
        if not all(isinstance(key, ast.Constant) for key in node.keys):
            raise Refused("its forward builds a dict with computed keys")
        pairs = zip(node.keys, node.values, strict=True)
        return {key.value: self.value(item) for key, item in pairs}

    def binary(self, node: ast.BinOp) -> fx.Node:
        return self.call(operation(node.op), self.value(node.left), self.value(node.right))

    def comparison(self, node: ast.Compare) -> fx.Node:
        if len(node.ops) != 1:
            raise Refused("its forward chains comparisons, which fx never writes")
        left, right = self.value(node.left), self.value(node.comparators[0])
        return self.call(operation(node.ops[0]), left, right)

    def subscript(self, node: ast.Subscript) -> fx.Node:
        return self.call(operator.getitem, self.value(node.value), self.value(node.slice))

    def slice(self, node: ast.Slice) -> slice:
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if part is None else self.value(part) for part in parts))

    def name(self, node: ast.Name) -> Any:
        name = node.id
        if name in self.names:
            return self.names[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        raise Refused(f"its forward reads {name!r}, which it never defines")

    def unary(self, node: ast.UnaryOp) -> Any:
        operand = self.value(node.operand)
        numeric = isinstance(operand, int | float) and not isinstance(operand, bool)
        if numeric and isinstance(node.op, ast.USub | ast.UAdd):
            return -operand if isinstance(node.op, ast.USub) else operand  # -1, as fx prints it
        return self.call(operation(node.op), operand)

    def call(self, function, *args, **kwargs) -> fx.Node:
        return self.graph.call_function(function, tuple(args), kwargs)

    def dotted(self, node: ast.expr) -> str | None:
        """ "torch.nn.functional.relu" for that chain of names, None for anything else."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id in self.names or node.id == "self":
            return None
        return ".".join([node.id, *reversed(parts)])

    def path(self, node: ast.expr) -> str | None:
        """The target an expression rooted at `self` names ("blocks.0.attn"), written as
        self.blocks, getattr(self.blocks, "0") or both; None when it is not rooted at self."""
        if isinstance(node, ast.Name):
            return "" if node.id == "self" and "self" not in self.names else None
        if isinstance(node, ast.Attribute):
            within = self.path(node.value)
            return None if within is None else f"{within}.{node.attr}".lstrip(".")
        if self.is_getattr(node) and len(node.args) == 2:
            within = self.path(node.args[0])
            name = node.args[1]
            if within is not None and isinstance(name, ast.Constant):
                if not isinstance(name.value, str) or name.value.startswith("__"):
                    raise Refused("its forward looks up an attribute fx never does")
                return f"{within}.{name.value}".lstrip(".")
        return None

    def is_getattr(self, node: ast.expr) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and "getattr" not in self.names
            and not node.keywords
        )

    def target(self, path: str) -> Any:
        """What `path` names on the network, checked to be a layer, a tensor or a constant."""
        try:
            found = self.root.get_submodule(path) if path else self.root
        except AttributeError:
            holder, _, attribute = path.rpartition(".")
            try:
                found = getattr(self.root.get_submodule(holder), attribute)
            except AttributeError:
                raise Refused(f"its forward uses self.{path}, which it does not have") from None
        if path and not isinstance(found, nn.Module | torch.Tensor):
            raise Refused(f"its forward uses self.{path}, which is neither a layer nor a tensor")
        return found

    def attribute(self, node: ast.Attribute) -> Any:
        path = self.path(node)
        if path is not None:
            if isinstance(self.target(path), nn.Module):
                raise Refused(f"its forward passes the layer self.{path} around")
            return self.graph.get_attr(path)
        dotted = self.dotted(node)
        if dotted is not None:
            return constant(dotted)
        if node.attr not in DATA_ATTRIBUTES:
            raise Refused(f"its forward reads .{node.attr}, which is no tensor's data")
        return self.call(getattr, self.value(node.value), node.attr)

    def called(self, node: ast.Call) -> Any:
        if self.is_getattr(node):
            path = self.path(node)
            if path is not None:  # getattr(self.x, "0"): a tensor read, or a layer called later
                if isinstance(self.target(path), nn.Module):
                    raise Refused(f"its forward passes the layer self.{path} around")
                return self.graph.get_attr(path)
        func = node.func
        path = self.path(func)
        args, kwargs = self.arguments_of(node)
        if path is not None:
            if not path or not isinstance(self.target(path), nn.Module):
                raise Refused(f"its forward calls self.{path}, which is not a layer")
            return self.graph.call_module(path, args, kwargs)
        if isinstance(func, ast.Name) and func.id not in self.names:
            return self.builtin(func.id, args, kwargs)
        dotted = self.dotted(func)
        if dotted is not None:
            function = tensor_function(dotted)
            if function is None:
                raise Refused(f"its forward calls {dotted}, which no export does")
            return self.graph.call_function(function, args, kwargs)
        if isinstance(func, ast.Attribute):
            method = func.attr
            if not public(method) or not hasattr(torch.Tensor, method):
                raise Refused(f"its forward calls .{method}(), which is no tensor method")
            if method in NOT_TENSOR_METHODS:
                raise Refused(f"its forward calls .{method}(), which no network's forward does")
            receiver = self.value(func.value)
            return self.graph.call_method(method, (receiver, *args), kwargs)
        raise Refused("its forward calls what fx never calls")

    def arguments_of(self, node: ast.Call) -> tuple[tuple, dict]:
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise Refused("its forward unpacks arguments, which fx never writes")
        if any(keyword.arg is None for keyword in node.keywords):
            raise Refused("its forward unpacks keyword arguments, which fx never writes")
        args = tuple(self.value(arg) for arg in node.args)
        return args, {keyword.arg: self.value(keyword.value) for keyword in node.keywords}

    def builtin(self, name: str, args: tuple, kwargs: dict) -> Any:
        """slice(...) and device(...) as the constants fx prints them as; getattr of a public
        attribute; a few builtins fx calls (len, int, ...)."""
        if name == "slice" and not kwargs and len(args) <= 3:
            return slice(*args)
        if name == "device":
            if any(isinstance(arg, fx.Node) for arg in [*args, *kwargs.values()]):
                raise Refused("its forward computes a device")
            try:
                return torch.device(*args, **kwargs)
            except (TypeError, ValueError, RuntimeError):
                raise Refused("its forward names a device that is none") from None
        if name not in BUILTINS:
            raise Refused(f"its forward calls {name}, which no export does")
        if name == "getattr" and (len(args) != 2 or args[1] not in DATA_ATTRIBUTES or kwargs):
            raise Refused("its forward looks up an attribute that is no tensor's data")
        return self.graph.call_function(BUILTINS[name], args, kwargs)

    READERS: ClassVar[dict] = {
        ast.Constant: constant,
        ast.Name: name,
        ast.Tuple: sequence,
        ast.List: sequence,
        ast.Dict: mapping,
        ast.UnaryOp: unary,
        ast.BinOp: binary,
        ast.Compare: comparison,
        ast.Subscript: subscript,
        ast.Slice: slice,
        ast.Attribute: attribute,
        ast.Call: called,
    }
