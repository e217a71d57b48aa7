"""A format of one's own, added as docs/library.md says: one ExportFormat record and one line in
FORMATS. python -m export then offers it, writes it, replaces its own export of the same run, and
export.load reads it back, for a dict of tensors and for a whole module alike."""

from pathlib import Path

import pytest
import torch

from export import formats as export
from export.artifacts import PrunedRun, load_run


def half_payload(run: PrunedRun, batch: int) -> export.Made:
    state = export.dense_payload(run)["state_dict"]
    half = {name: t.half() if t.is_floating_point() else t for name, t in state.items()}
    return export.Made({"spec": run.spec, "half": half})


def load_half(path: Path, payload: dict, device: torch.device) -> torch.nn.Module:
    with export.damaged(path, "half"):
        model = export.dense_model({"spec": payload["spec"], "state_dict": payload["half"]})
    return model.to(device).eval()


def traced_module(run: PrunedRun, batch: int) -> export.Made:
    module = export.compact_module(run)
    module.export_info["format"] = "traced"
    return export.Made(module)


HALF = export.ExportFormat(
    "half", "a float16 state dict", make=half_payload, load=load_half, keys=("spec", "half")
)
TRACED = export.ExportFormat(
    "traced",
    "the compacted network once more",
    make=traced_module,
    load=export.module_network,
    module=True,
    report=export.compact_report,
)


@pytest.fixture(params=[HALF, TRACED], ids=lambda record: record.name)
def own_format(request):
    record = request.param
    export.FORMATS[record.name] = record  # the one line the recipe adds
    yield record
    del export.FORMATS[record.name]


def test_a_registered_format_is_offered_written_replaced_and_loaded(
    own_format, pruned_run, tmp_path, capsys
):
    with pytest.raises(SystemExit):
        export.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert own_format.summary in shown and f",{own_format.name}}}" in shown
    out = tmp_path / f"{own_format.name}.pt"
    # the second export replaces the first without --force: it is told as one of the same run
    for _ in range(2):
        assert export.main([str(pruned_run), "--to", own_format.name, str(out)]) == 0
        assert capsys.readouterr().out.startswith(f"wrote {out} ({own_format.name}, ")
    assert export.export_header(out).format == own_format.name
    model = export.load(out)
    assert not model.training
    run = load_run(pruned_run)
    inputs = torch.randn(8, *run.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # float16 weights: about three decimal digits
        torch.testing.assert_close(model(inputs), run.model(inputs), rtol=1e-2, atol=1e-2)


def test_a_registered_module_format_counts_as_one(own_format):
    assert (own_format.name in export.MODULE_FORMATS) == own_format.module
    assert list(export.MODULE_FORMATS)[:2] == ["compact", "sparse_runtime"]


@pytest.mark.parametrize(("keys", "module"), [((), False), (("spec",), True)])
def test_a_record_names_keys_exactly_when_it_writes_a_dict(keys, module):
    with pytest.raises(ValueError, match="'odd': keys are the keys of a state format's dict"):
        export.ExportFormat("odd", "", make=half_payload, load=load_half, keys=keys, module=module)


def test_an_unknown_format_is_refused_naming_the_registered_ones(pruned_run, tmp_path):
    # not "half": docs/library.md's recipe registers that one
    with pytest.raises(ValueError, match="'quarter'; choose from compact, sparse_runtime, dense"):
        export.export(pruned_run, "quarter", tmp_path / "quarter.pt")
