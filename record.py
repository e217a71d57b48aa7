"""One run as one typed record: its options in five sections, each option tagged once with what
it is to the run.

cli.py builds the record from the command line (or from a run's config.json, on resume) and
nothing past cli.py sees argparse: main.py, training, the launcher and the report read sections
(`record.train.lr`) or the flat options a run's files keep (`record.options()`, under the flags'
names: `--lambda` is the field `lambda_` and the key "lambda").

Every option has one role, declared beside its default:

- RECIPE: what is trained (the network, the data, the optimizer, the method);
- LEVEL: how far the method prunes (a rate, a frequency, a target), which a curve varies from
  one sparsity level to the next;
- NEUTRAL: the seed, and how the same training is computed or evaluated (mixed precision,
  channels-last, the evaluation batch size, whether model.pt is written);
- MACHINE: where and how it runs (the device, workers, data paths, plugins);
- NAMING: what the run is called and where it is written.

From the roles follow the lists that would otherwise be kept by hand: a run's identity (the
hash in its directory's name) is its RECIPE, LEVEL and NEUTRAL options away from their defaults;
the report's recipe is RECIPE alone (LEVEL places a run on a curve); a `--run_dir` of the same
run may differ in MACHINE and NAMING alone. A few options are also `fixed`: even `--resume`,
which may change other options for one resume, may not change the network, the dataset, the
criterion or the tensors it prunes.

The criteria's and schedules' own options (`--flipout_p`, `--prune_freq`) are declared by their
dataclasses (pruning/options.py) and kept in `prune.components`; their role is RECIPE, or LEVEL
where the option says so. They are read from the registries when asked, so that a criterion
registered later (a researcher's plugin) counts as fully as a built-in one. A new option's
default must do nothing: only options away from their defaults enter the identity, so adding
one changes no existing run's name.
"""

import dataclasses
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pruning import CRITERIA, SCHEDULES
from pruning.options import Option, options_of
from pruning.schedule import NEVER
from utils.runtime import default_num_workers


class Role(Enum):
    RECIPE = "recipe"
    LEVEL = "level"
    NEUTRAL = "neutral"
    MACHINE = "machine"
    NAMING = "naming"


IDENTITY = frozenset({Role.RECIPE, Role.LEVEL, Role.NEUTRAL})


def tagged(role: Role, default: Any = None, *, fixed: bool = False):
    """A field of a section: its role, its default (a list default is copied per record)."""
    metadata = {"role": role, "fixed": fixed}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def recipe(default: Any = None, *, fixed: bool = False):
    return tagged(Role.RECIPE, default, fixed=fixed)


def neutral(default: Any = None):
    return tagged(Role.NEUTRAL, default)


def machine(default: Any = None):
    return tagged(Role.MACHINE, default)


def naming(default: Any = None):
    return tagged(Role.NAMING, default)


@dataclass(frozen=True)
class ModelOptions:
    model: str = recipe("lenet300", fixed=True)
    model_kwargs: list[str] | None = recipe(None, fixed=True)  # KEY=VALUE, sorted
    pretrained: bool = recipe(False)
    init_from: str | None = recipe(None)


@dataclass(frozen=True)
class DataOptions:
    dataset: str = recipe("digits", fixed=True)
    image_size: int | None = recipe(None)
    val: bool = recipe(False)
    val_size: int | None = recipe(None)
    evaluate_on_val: bool = recipe(False)
    limit_batches: int | None = recipe(None)
    data_dir: str = machine("./data")
    no_download: bool = machine(False)
    num_workers: int = machine(default_num_workers())
    data_on_device: bool | None = machine(None)


@dataclass(frozen=True)
class TrainOptions:
    batch_size: int = recipe(128)
    epochs: int = recipe(20)
    lr: float = recipe(0.1)
    opt: str = recipe("sgd")
    momentum: float = recipe(0.9)
    reg_type: str = recipe("wdecay")
    lambda_: float = recipe(5e-4)
    use_scheduler: bool = recipe(False)
    milestones: list[int] = recipe([150, 250])
    anneal_lr: bool = recipe(False)
    anneal_lambda: bool = recipe(False)
    clip_grad: bool = recipe(False)
    max_norm: float = recipe(1.0)
    seed: int = neutral(0)
    test_batch_size: int = neutral(256)
    amp: bool = neutral(False)
    channels_last: bool = neutral(False)
    compile_kernels: str = machine("auto")


@dataclass(frozen=True)
class PruneOptions:
    prune_criterion: str = recipe("flipout", fixed=True)
    schedule: str | None = recipe(None)
    nm: str | None = recipe(None)
    nm_exclude: list[str] | None = recipe(None)
    prune_include: list[str] | None = recipe(None, fixed=True)
    prune_exclude: list[str] | None = recipe(None, fixed=True)
    prune_bias: bool = recipe(False)
    prune_bnorm: bool = recipe(False)
    noise: bool = recipe(False)
    noise_scale_factor: float = recipe(1.0)
    stop_noise_at: int = recipe(NEVER)
    noise_only_prunable: bool = recipe(False)
    noise_kind: str = recipe("gradient")
    add_hs: bool = recipe(False)
    hoyer_lambda: float = recipe(0.0)
    stop_hoyer_at: int = recipe(NEVER)
    hoyer_scope: str = recipe("prunable")
    # the criteria's and schedules' own options, under their flags (see component_options)
    components: Mapping[str, Any] = field(default_factory=dict, metadata={"components": True})


@dataclass(frozen=True)
class RunOptions:
    save_model: bool = neutral(False)
    log_mechanism: bool = neutral(False)
    device: str = machine("auto")
    quiet: bool = machine(False)
    parallel: bool = machine(False)
    dist_timeout: float = machine(300.0)
    plugins: list[str] | None = machine(None)  # modules imported before the parser is built
    resume: str | None = machine(None)
    comment: str = naming("")
    logdir: str = naming("")
    run_dir: str | None = naming(None)


SECTIONS = {
    "model": ModelOptions,
    "data": DataOptions,
    "train": TrainOptions,
    "prune": PruneOptions,
    "run": RunOptions,
}


def key_of(name: str) -> str:
    """The key a run's files keep an option under, its flag's name: a field named after a Python
    keyword ends in "_" (lambda_), the key does not (lambda)."""
    return name.rstrip("_")


@dataclass(frozen=True)
class Spec:
    """One option of the record: its key, the section and field it lives in (a component option
    lives in prune.components), its role, whether a resume may change it, and its default."""

    key: str
    section: str
    name: str
    role: Role
    fixed: bool
    default: Any

    @property
    def identity(self) -> bool:
        return self.role in IDENTITY


def section_specs() -> Iterator[Spec]:
    for section, cls in SECTIONS.items():
        for item in dataclasses.fields(cls):
            if "role" in item.metadata:
                default = (
                    item.default_factory() if item.default is dataclasses.MISSING else item.default
                )
                meta = item.metadata
                yield Spec(
                    key_of(item.name), section, item.name, meta["role"], meta["fixed"], default
                )


def component_options() -> dict[str, Option]:
    """Every option a registered criterion or schedule declares, by flag, each once."""
    declared: dict[str, Option] = {}
    for registry in (SCHEDULES, CRITERIA):
        for cls in registry.values():
            for _, spec in options_of(cls):
                if declared.setdefault(spec.flag, spec) != spec:
                    raise TypeError(f"--{spec.flag} is declared twice, differently")
    return declared


def specs() -> dict[str, Spec]:
    """Every option of a run by key, the sections' then the registered components', as the
    registries hold them now (a sweep asks thousands of times: read once per content of theirs).
    Never change the dict returned."""
    holds = tuple(tuple((name, id(cls)) for name, cls in r.items()) for r in (SCHEDULES, CRITERIA))
    return specs_of(holds)


@functools.lru_cache(maxsize=8)
def specs_of(holds: tuple) -> dict[str, Spec]:
    """specs() of registries holding `holds`."""
    found = {spec.key: spec for spec in section_specs()}
    for flag, option in component_options().items():
        role = Role.LEVEL if option.level else Role.RECIPE
        found[flag] = Spec(flag, "prune", "components", role, False, option.default)
    return found


def keys_with(*roles: Role) -> list[str]:
    return [key for key, spec in specs().items() if spec.role in roles]


def identity_defaults() -> dict[str, Any]:
    """The options that make a run what it is, each with its default as JSON keeps it (which is
    how config.json holds it)."""
    return {key: as_json(spec.default) for key, spec in specs().items() if spec.identity}


def fixed_keys() -> list[str]:
    return [key for key, spec in specs().items() if spec.fixed]


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class RunRecord:
    """A run's options, by section; `resume_overrides`, on a resume, the options given then that
    differ from the run's own (by key), which config.json lists under its resumes."""

    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    prune: PruneOptions = field(default_factory=PruneOptions)
    run: RunOptions = field(default_factory=RunOptions)
    resume_overrides: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, values: Mapping[str, Any], overrides: Mapping | None = None):
        """The record of `values` (by key, or by field name: lambda_), each option missing from
        them at its default; keys that are no option (config.json's run_id) are left out. The
        values are taken as they are: cli.py checks them."""
        by_key = {key_of(name): value for name, value in values.items()}
        sections: dict[str, dict] = {name: {} for name in SECTIONS}
        components = {}
        for key, spec in specs().items():
            if spec.name == "components":  # every one, so that equal options are equal records
                components[key] = by_key.get(key, spec.default)
            elif key in by_key:
                sections[spec.section][spec.name] = by_key[key]
        sections["prune"]["components"] = components
        built = {name: SECTIONS[name](**fields) for name, fields in sections.items()}
        return cls(**built, resume_overrides=dict(overrides or {}))

    def options(self) -> dict[str, Any]:
        """Every option under its key, each component option at its default where not given:
        what config.json and summary.json keep."""
        flat = {}
        for spec in specs().values():
            if spec.name == "components":
                flat[spec.key] = self.prune.components.get(spec.key, spec.default)
            else:
                flat[spec.key] = getattr(getattr(self, spec.section), spec.name)
        return flat

    def by_name(self) -> dict[str, Any]:
        """options(), keyed by field name (lambda_) as configurations of Python code take them."""
        names = {spec.key: spec.name for spec in section_specs()}
        return {names.get(key, key): value for key, value in self.options().items()}

    def value(self, key: str) -> Any:
        return self.options()[key]

    def replace(self, **values: Any) -> "RunRecord":
        """This record with the options given (by key or field name) changed."""
        return RunRecord.from_options({**self.options(), **values}, self.resume_overrides)

    def identity_options(self) -> dict[str, Any]:
        """The options of its identity that are away from their defaults, as JSON has them."""
        options = self.options()
        return {
            key: as_json(options[key])
            for key, default in identity_defaults().items()
            if as_json(options[key]) != default
        }
