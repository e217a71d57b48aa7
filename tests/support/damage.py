"""Ways to damage each file of a run directory, by name: a damage takes the file's path and spoils
it in place. The tables (BYTE_DAMAGE for any file, then JSON_DAMAGE, SUMMARY_DAMAGE, CONFIG_DAMAGE,
METRICS_DAMAGE and CHECKPOINT_DAMAGE for each kind of run file) are what the tools that read run
directories (tests/test_run_files.py) and a resumed run (tests/test_faults.py) must survive."""

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path

import torch

from models import build_model

Damage = Callable[[Path], None]


def rewritten(transform: Callable[[bytes], bytes]) -> Damage:
    def damage(path: Path) -> None:
        path.write_bytes(transform(path.read_bytes()))

    return damage


def deleted(path: Path) -> None:
    path.unlink()


def random_bytes(size: int | None = None) -> Damage:
    # seeded, so that a failure comes back on the next run
    return rewritten(lambda data: random.Random(size).randbytes(size or len(data)))


def flipped_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


BYTE_DAMAGE: dict[str, Damage] = {
    "deleted": deleted,
    "empty": rewritten(lambda data: b""),
    "first byte only": rewritten(lambda data: data[:1]),
    "first 100 bytes only": rewritten(lambda data: data[:100]),
    "first half only": rewritten(lambda data: data[: len(data) // 2]),
    # JSON files end in a newline: two bytes off spoil them too
    "last two bytes missing": rewritten(lambda data: data[:-2]),
    "random bytes": random_bytes(),
    "64 random bytes": random_bytes(64),
    "not UTF-8": rewritten(lambda data: b"\xff\xfe\x80" + data),
}


def json_replaced(value_of: Callable[[object], object]) -> Damage:
    """The file's JSON replaced by `value_of(its parsed content)`."""

    def damage(path: Path) -> None:
        path.write_text(json.dumps(value_of(json.loads(path.read_text()))))

    return damage


def json_edited(edit: Callable[[dict], None]) -> Damage:
    def value_of(content):
        edit(content)
        return content

    return json_replaced(value_of)


def field(key: str, value) -> Damage:
    def edit(content: dict) -> None:
        content[key] = value

    return json_edited(edit)


def option(key: str, value) -> Damage:
    return json_edited(lambda content: content["options"].__setitem__(key, value))


def without(key: str) -> Damage:
    return json_edited(lambda content: content.pop(key))


JSON_DAMAGE: dict[str, Damage] = {
    **BYTE_DAMAGE,
    "a list": json_replaced(lambda content: [content]),
    "a string": json_replaced(lambda content: "a run"),
    "a number": json_replaced(lambda content: 42),
    "null": json_replaced(lambda content: None),
    "NaN": rewritten(lambda data: b"NaN"),
    "nested too deeply to parse": rewritten(lambda data: b"[" * 100_000),
}

SUMMARY_DAMAGE: dict[str, Damage] = {
    **JSON_DAMAGE,
    "status missing": without("status"),
    "status a number": field("status", 1),
    "model a number": field("model", 5),
    "prune_criterion a list": field("prune_criterion", ["flipout"]),
    "status unknown": field("status", "paused\n| forged | row |"),
    "options a list": field("options", ["add_hs"]),
    "hoyer_lambda a string": option("hoyer_lambda", "a lot"),
    "hoyer_lambda infinite": option("hoyer_lambda", float("inf")),
    "final_test_acc a string": field("final_test_acc", "87%"),
    "final_test_acc NaN": field("final_test_acc", float("nan")),
    "final_test_acc true": field("final_test_acc", True),
    "final_sparsity above 1": field("final_sparsity", 5),
    "final_sparsity too large for a float": field("final_sparsity", 10**400),
    "flops_dense a string": field("flops_dense", "many"),
    "run_id a number": field("run_id", 7),
    "seed an object": field("seed", {"value": 0}),
}

CONFIG_DAMAGE: dict[str, Damage] = {
    **JSON_DAMAGE,
    "prune_criterion missing": without("prune_criterion"),
    "prune_criterion a number": field("prune_criterion", 3),
    "hoyer_lambda a string": field("hoyer_lambda", "a lot"),
    "epochs a list": field("epochs", [1, 2]),
    "seed an object": field("seed", {"value": 0}),
    "run_id a number": field("run_id", 7),
}

METRICS_DAMAGE: dict[str, Damage] = {
    **BYTE_DAMAGE,
    "lists for lines": rewritten(lambda data: b"[1]\n[2]\n"),
    "strings for lines": rewritten(lambda data: b'"epoch"\n"epoch"\n'),
    "a last line cut short": rewritten(lambda data: data + b'{"epoch": 3, "tr'),
    "blank lines": rewritten(lambda data: b"\n\n" + data + b"\n\n"),
}


def saved(value_of: Callable[[dict], object]) -> Damage:
    """checkpoint.pt replaced by a torch.save of `value_of(a copy of its state)`."""

    def damage(path: Path) -> None:
        state = copy.deepcopy(torch.load(path, weights_only=True))
        torch.save(value_of(state), path)

    return damage


def edited(edit: Callable[[dict], None]) -> Damage:
    def value_of(state: dict) -> dict:
        edit(state)
        return state

    return saved(value_of)


def spec(**changes) -> Damage:
    return edited(lambda state: state["model_spec"].update(changes))


class RunsCode:
    """Pickles as a call of print: what a malicious checkpoint would do with a worse function."""

    def __reduce__(self):
        return (print, ("a checkpoint ran code",))


def images_too_small(state: dict) -> None:
    """A consistent VGG-11 checkpoint, but for 4-pixel images: its weights do not depend on the
    image size, and its five poolings need at least 32 pixels."""
    spec = {"name": "vgg11", "num_classes": 10, "in_channels": 1, "image_size": 4}
    model = build_model(**spec)
    weights = {name: p for name, p in model.named_parameters() if name.endswith("weight")}
    state["model_spec"] = spec
    state["model"] = model.state_dict()
    state["pruner"]["masks"] = {
        name: torch.ones_like(p, dtype=torch.bool) for name, p in weights.items()
    }
    state["pruner"]["flip_counts"] = {
        name: torch.zeros_like(p, dtype=torch.int32) for name, p in weights.items()
    }


def shrunk(part: str) -> Callable[[dict], None]:
    def edit(state: dict) -> None:
        state["pruner"][part]["1.weight"] = state["pruner"][part]["1.weight"][:10]

    return edit


CHECKPOINT_DAMAGE: dict[str, Damage] = {
    **{name: damage for name, damage in BYTE_DAMAGE.items() if name != "not UTF-8"},
    "a text file": rewritten(lambda data: b"not a checkpoint\n"),
    "a list": saved(lambda state: [state]),
    "a tensor": saved(lambda state: torch.zeros(3)),
    "a dict that is not a checkpoint": saved(lambda state: {"weights": torch.zeros(3)}),
    "a pickle that runs code": saved(lambda state: {**state, "epoch": RunsCode()}),
    "format_version 2": edited(lambda state: state.update(format_version=2)),
    "model missing": edited(lambda state: state.pop("model")),
    "model_spec missing": edited(lambda state: state.pop("model_spec")),
    "pruner missing": edited(lambda state: state.pop("pruner")),
    "epoch a string": edited(lambda state: state.update(epoch="2")),
    "model a list": edited(lambda state: state.update(model=list(state["model"].values()))),
    "masks a list": edited(lambda state: state["pruner"].update(masks=[])),
    "unknown model": spec(name="lenet3000"),
    "wrong number of classes": spec(num_classes=7),
    "an enormous number of classes": spec(num_classes=10**12),
    "a negative number of classes": spec(num_classes=-1),
    "a negative image size": spec(image_size=-32),
    "an enormous image size": spec(image_size=10**6),
    "images too small for the network": edited(images_too_small),
    "an unknown model_spec key": spec(depth=3),
    "a weight missing": edited(lambda state: state["model"].pop("5.bias")),
    "an extra weight": edited(lambda state: state["model"].update(extra=torch.zeros(1))),
    "a weight of the wrong shape": edited(
        lambda state: state["model"].update({"5.weight": torch.zeros(7, 100)})
    ),
    "masks of the wrong shape": edited(shrunk("masks")),
    "flip counts of the wrong shape": edited(shrunk("flip_counts")),
    "float masks": edited(
        lambda state: state["pruner"]["masks"].update({"1.weight": torch.ones(300, 1024)})
    ),
    "float flip counts": edited(
        lambda state: state["pruner"]["flip_counts"].update({"1.weight": torch.ones(300, 1024)})
    ),
    "a mask for a parameter the network lacks": edited(
        lambda state: state["pruner"]["masks"].update({"9.weight": torch.ones(2, dtype=bool)})
    ),
    "flip counts for fewer parameters": edited(
        lambda state: state["pruner"]["flip_counts"].pop("5.weight")
    ),
    "no masks at all": edited(lambda state: state["pruner"].update(masks={}, flip_counts={})),
    # may land inside a tensor's data, where it changes a weight and nothing else
    "a byte flipped halfway": rewritten(flipped_middle_byte),
}
