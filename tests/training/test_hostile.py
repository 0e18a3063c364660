"""Hostile files: nothing is ever unpickled, nothing in a file names code to run or a place
to write, and a damaged checkpoint is refused whatever part of it is damaged."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_safetensors

from pyro_vae import VAE, load
from pyro_vae.cli.main import main
from pyro_vae.data import DataError, load_dataset
from pyro_vae.training.checkpoint import (
    CheckpointError,
    load_config,
    load_run_config,
    read_tensors,
    write_tensors,
)
from pyro_vae.training.guard import fused_adam
from pyro_vae.training.runstate import REQUIRED_META, restore

FAST = ["--hidden", "16", "--latent-dim", "2", "--quiet", "--eval-num-samples", "2"]
FAST += ["--eval-num-points", "10"]
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = [ROOT / "pyro_vae", ROOT / "models", ROOT / "guides"]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *FAST]) == 0
    return out


@pytest.fixture
def run(digits_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(digits_run, tmp_path / "run"))


class Payload:
    """Unpickling this creates the file ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _pickle(marker: Path) -> bytes:
    return pickle.dumps({"model.weight": Payload(marker)})


def _torch_zip(marker: Path) -> bytes:
    """A torch.save-style zip archive whose data.pkl runs the payload."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", _pickle(marker))
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


def test_the_payload_would_create_the_file(tmp_path: Path) -> None:
    opened = pickle.loads(_pickle(tmp_path / "control"))  # what an unpickling loader does
    opened["model.weight"].close()
    assert (tmp_path / "control").exists()


@pytest.mark.parametrize("make", [_pickle, _torch_zip], ids=["pickle", "torch-zip"])
@pytest.mark.parametrize("name", ["model.safetensors", "checkpoint.safetensors"])
def test_a_malicious_pickle_is_never_run(
    make: Callable[[Path], bytes],
    name: str,
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "pwned"
    (run / name).write_bytes(make(marker))
    with pytest.raises(CheckpointError, match="never reads pickles"):
        read_tensors(run / name)
    if name == "model.safetensors":
        with pytest.raises(CheckpointError):
            load(run)
    commands = [
        ["evaluate", str(run), "--num-samples", "2", "--num-points", "5"],
        ["sample", str(run), "--num", "2", "--out", str(tmp_path / "s.npy")],
        ["train", "--resume", str(run), "--epochs", "1", "--quiet"],
    ]
    reads = {"model.safetensors": ("evaluate", "sample"), "checkpoint.safetensors": ("train",)}
    for argv in commands:
        code = main(argv)
        err = capsys.readouterr().err
        if argv[0] in reads[name]:
            assert code == 2 and "not a valid safetensors file" in err, err
        else:  # a command that does not read the file; resuming rewrites model.safetensors
            assert code == 0, err
    assert not marker.exists()


def test_pickled_data_files_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    np.save(tmp_path / "obj.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled"):
        load_dataset(str(tmp_path / "obj.npy"))
    objects = np.array([Payload(marker)] * 3, dtype=object)
    np.savez(tmp_path / "obj.npz", train=objects, valid=objects, test=objects)
    with pytest.raises(DataError):
        load_dataset(str(tmp_path / "obj.npz"))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        # a name no registry holds is refused before anything is built; the message asks
        # for the plugin file that would register it (and never imports anything itself)
        ({"vae": {"prior": "os.system"}}, "needs the prior 'os.system'"),
        ({"vae": {"network": "subprocess.Popen"}}, "needs the network 'subprocess.Popen'"),
        ({"vae": {"likelihood": "bernoulli:__class__=os.system"}}, "has no parameter '__class__'"),
        ({"vae": {"activation": "builtins.eval"}}, "unknown activation"),
        ({"py/object": "os.system"}, "unknown top-level key(s) ['py/object']"),
        ({"vae": {"__class__": "os.system"}}, "unknown key(s) ['__class__']"),
        ({"vae": {"hidden": "../../etc"}}, "must be a list of ints"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_config_json_naming_code_is_refused(
    change: dict[str, object], needle: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = json.loads((run / "config.json").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    (run / "config.json").write_text(json.dumps(raw))
    before = snapshot(run)
    for argv in (["sample", str(run), "--num", "2"], ["train", "--resume", str(run), "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    assert snapshot(run) == before


def test_paths_in_config_json_never_lead_to_writes_elsewhere(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train.out`` in config.json is ignored on resume: the run directory is the one given."""
    raw = json.loads((run / "config.json").read_text())
    raw["train"]["out"] = "../elsewhere"
    (run / "config.json").write_text(json.dumps(raw))
    work = tmp_path / "cwd" / "deeper"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)

    def outside() -> dict[Path, bytes | None]:
        paths = [p for p in tmp_path.rglob("*") if not p.is_relative_to(run)]
        return {p: p.read_bytes() if p.is_file() else None for p in paths}

    before = outside()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert outside() == before
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_links_out_of_a_run_directory_are_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(run / "plots")
    (run / "plots").symlink_to(outside, target_is_directory=True)
    for argv in (
        ["train", "--resume", str(run), "--epochs", "2", "--quiet"],
        ["evaluate", str(run), "--num-samples", "2"],
        ["sample", str(run), "--num", "2"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is a symbolic link to" in err and "outside the run directory" in err
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- damaged checkpoints


def _resume(run: Path) -> int:
    return main(["train", "--resume", str(run), "--epochs", "1", "--quiet"])


def _variants(
    tensors: dict[str, torch.Tensor], meta: dict[str, object]
) -> list[tuple[str, dict[str, torch.Tensor], dict[str, object]]]:
    """Each tensor dropped, reshaped, poisoned with NaN; each metadata key dropped."""
    out: list[tuple[str, dict[str, torch.Tensor], dict[str, object]]] = []
    for key, value in tensors.items():
        if key.startswith("rng.cuda"):
            continue  # present only where CUDA is; its absence is allowed
        out.append((f"no {key}", {k: v for k, v in tensors.items() if k != key}, meta))
        out.append((f"{key} misshapen", {**tensors, key: torch.zeros(3, 2).to(value)}, meta))
        if value.is_floating_point():
            out.append((f"{key} NaN", {**tensors, key: torch.full_like(value, math.nan)}, meta))
    for key in meta:
        out.append((f"no meta {key}", tensors, {k: v for k, v in meta.items() if k != key}))
    return out


def _restore_into_fresh(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, object]
) -> None:
    vae = VAE(load_run_config(path.parent).vae)
    opt = fused_adam(list(vae.parameters()), 1e-3)
    rng = torch.get_rng_state()
    try:
        restore(path, tensors, meta, vae=vae, opt=opt, gen=torch.Generator(), stateful={})
    finally:
        torch.set_rng_state(rng)


def test_every_missing_or_damaged_checkpoint_entry_is_refused(run: Path) -> None:
    path = run / "checkpoint.safetensors"
    tensors, meta = read_tensors(path)
    assert {"model.guide.encoder.net.0.weight", "optim.0.exp_avg", "rng.data"} <= set(tensors)
    _restore_into_fresh(path, tensors, meta)  # the intact file restores
    variants = _variants(tensors, meta)
    assert len(variants) > 3 * len(tensors)
    for label, damaged, damaged_meta in variants:
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            _restore_into_fresh(path, damaged, damaged_meta)
            pytest.fail(label)


def test_a_damaged_checkpoint_leaves_the_run_unchanged(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run / "checkpoint.safetensors"
    tensors, meta = read_tensors(path)
    picked = [v for v in _variants(tensors, meta) if v[0].startswith(("no model", "no meta rng"))]
    picked += [v for v in _variants(tensors, meta) if v[0] == "optim.0.exp_avg NaN"]
    for label, damaged, damaged_meta in picked[:3]:
        write_tensors(path, damaged, damaged_meta)
        before = snapshot(run)
        assert _resume(run) == 2, label
        err = capsys.readouterr().err
        assert "Traceback" not in err and str(path) in err, (label, err)
        assert snapshot(run) == before, label
    write_tensors(path, tensors, meta)
    assert _resume(run) == 0


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.dictionaries(
        st.sampled_from(REQUIRED_META) | st.text(max_size=6),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=4,
    )
)
def test_arbitrary_checkpoint_metadata_restores_or_is_refused(
    digits_run: Path, meta: dict[str, object]
) -> None:
    """Metadata overwritten with arbitrary JSON: a clean restore or a CheckpointError."""
    path = digits_run / "checkpoint.safetensors"
    tensors, good = read_tensors(path)
    config = load_run_config(digits_run)
    vae = VAE(config.vae)
    opt = fused_adam(list(vae.parameters()), 1e-3)
    gen = torch.Generator()
    rng = torch.get_rng_state()
    try:
        restore(path, tensors, {**good, **meta}, vae=vae, opt=opt, gen=gen, stateful={})
    except CheckpointError as e:
        assert str(path) in str(e)
    finally:
        torch.set_rng_state(rng)


@settings(max_examples=60, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_checkpoint_files(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    folder = tmp_path_factory.mktemp("bytes")
    (folder / "model.safetensors").write_bytes(data)
    (folder / "config.json").write_bytes(data)
    with pytest.raises(CheckpointError):
        read_tensors(folder / "model.safetensors")
    with pytest.raises(CheckpointError):
        load_config(folder)
    with contextlib.suppress(CheckpointError):  # a header of arbitrary bytes
        (folder / "model.safetensors").write_bytes(len(data).to_bytes(8, "little") + data)
        read_tensors(folder / "model.safetensors")


def test_huge_safetensors_header_is_refused(tmp_path: Path) -> None:
    blob = bytearray(save_safetensors({"a": torch.zeros(2)}))
    blob[:8] = (2**62).to_bytes(8, "little")
    (tmp_path / "m.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_tensors(tmp_path / "m.safetensors")


# --------------------------------------------------------------------------- the source


PICKLERS = ("pickle", "cPickle", "dill", "joblib", "shelve")
UNSAFE = ("read_pickle", "get_param_store().load", "torch.serialization")


def _unsafe_calls(path: Path) -> list[str]:
    """Calls in ``path`` that could unpickle: pickle/dill/joblib modules, torch.load without
    ``weights_only=True``, numpy loads with ``allow_pickle=True``, param-store loads."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in PICKLERS for n in names):
                found.append(f"{path.name}:{node.lineno} imports a pickle module")
        if not isinstance(node, ast.Call):
            continue
        text = ast.unparse(node.func)
        kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if text == "torch.load" and kwargs.get("weights_only") != "True":
            found.append(f"{path.name}:{node.lineno} {text} without weights_only=True")
        if kwargs.get("allow_pickle") == "True":
            found.append(f"{path.name}:{node.lineno} {text}(allow_pickle=True)")
        if any(u in text for u in UNSAFE):
            found.append(f"{path.name}:{node.lineno} {text}")
    return found


def test_the_package_never_unpickles() -> None:
    files = [p for d in PACKAGE for p in d.rglob("*.py")]
    assert len(files) > 10
    assert [f for p in files for f in _unsafe_calls(p)] == []


def test_the_source_check_finds_unsafe_calls(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport torch\nimport numpy as np\n"
        "torch.load('x')\nnp.load('x', allow_pickle=True)\npyro.get_param_store().load('p')\n"
    )
    assert len(_unsafe_calls(bad)) == 4
    assert os.path.exists(bad)
