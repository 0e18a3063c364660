"""Every kind of bad input: a non-zero exit, one paragraph saying what and what to do, no
traceback, and nothing half-done (a new run directory is not created, an existing one is
left as it was: the same names, bytes and modification times, see :func:`snapshot`).

Each case that can be aimed at an existing run is: bad data through ``evaluate`` and
through ``--resume``, bad settings, component specs and TOML through ``--out RUN`` and
``--resume RUN``, damaged checkpoints and data files through every command that reads them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pyro_vae import data
from pyro_vae.cli.main import main
from pyro_vae.config import TrainConfig, VAEConfig
from pyro_vae.data import published
from pyro_vae.guides import GUIDES
from pyro_vae.infer.objectives import OBJECTIVES
from pyro_vae.models import LIKELIHOODS, PRIORS
from pyro_vae.nn import NETWORKS
from pyro_vae.registry import Registry

FAST = ["--hidden", "16", "--latent-dim", "2", "--quiet", "--eval-num-samples", "2"]
FAST += ["--eval-num-points", "10"]
SHARED = os.environ.get("PYRO_VAE_DATA")


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """``directory`` and everything under it: names, bytes (b"" for a folder) and mtimes.

    A folder's mtime changes when an entry is created, renamed or removed in it, so a file
    written and deleted again (a temporary file) shows too.
    """
    paths = [directory, *sorted(directory.rglob("*"))]
    return {
        str(p.relative_to(directory)): (
            p.read_bytes() if p.is_file() else b"",
            p.stat().st_mtime_ns,
        )
        for p in paths
    }


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run the CLI; assert exit 2, one paragraph naming the problem, and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("pyro-vae: error: ") and "Traceback" not in err
    assert not re.match(r"pyro-vae: error: \w+(Error|Exception): ", err), err  # ours, not raw
    assert err.rstrip().endswith("(run with --debug for the traceback)")
    assert len(err.strip().splitlines()) == 2  # the paragraph, and the --debug hint
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *FAST]) == 0
    return out


@pytest.fixture
def run(digits_run: Path, tmp_path: Path) -> Path:
    """A private copy of a finished run, to be damaged by a test."""
    return Path(shutil.copytree(digits_run, tmp_path / "run"))


def npy(folder: Path, name: str, array: np.ndarray) -> str:
    path = folder / name
    np.save(path, array)
    return str(path)


def grey(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)


# --------------------------------------------------------------------------- train: data


def _nan(d: Path) -> str:
    x = grey()
    x[3, 0, 2, 2] = np.nan
    return npy(d, "nan.npy", x)


def _inf(d: Path) -> str:
    x = grey()
    x[1, 0, 0, 0] = np.inf
    return npy(d, "inf.npy", x)


def _csv(text: str) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        (d / "x.csv").write_text(text)
        return str(d / "x.csv")

    return make


DATA_CASES: list[tuple[str, Callable[[Path], str], list[str], tuple[str, ...]]] = [
    ("nan", _nan, [], ("1 NaN or infinite", "Remove or impute")),
    ("inf", _inf, [], ("NaN or infinite",)),
    ("above-one", lambda d: npy(d, "big.npy", 2 * grey()), [], ("[0, 1]", "Rescale")),
    (
        "grey-for-bernoulli",
        lambda d: npy(d, "grey.npy", grey()),
        ["--binarize", "none"],
        ("binary data (0 or 1)", "--binarize dynamic"),
    ),
    ("empty", lambda d: npy(d, "empty.npy", np.zeros((0, 64), np.float32)), [], ("empty",)),
    ("two-rows", lambda d: npy(d, "two.npy", grey(2)), [], ("at least 3",)),
    ("text-cell", _csv("a,b\n0,1\n1,x\n0,0\n"), [], ("line 3, column 2", "'x'")),
    ("ragged-csv", _csv("0,1\n1\n0,0\n"), [], ("expected 2 comma-separated values",)),
    ("object-array", lambda d: npy(d, "obj.npy", np.array(["a", "b", "c"])), [], ("dtype",)),
    ("no-such-file", lambda d: str(d / "missing.npy"), [], ("Unknown dataset", "digits")),
]


@pytest.mark.parametrize(("case", "make", "flags", "needles"), DATA_CASES, ids=lambda c: c)
def test_bad_data_for_train(
    case: str,
    make: Callable[[Path], str],
    flags: list[str],
    needles: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "new"
    argv = ["train", "--out", str(out), "--dataset", make(tmp_path), *FAST, *flags]
    refused(argv, capsys, *needles)
    assert not out.exists()


def _point_at(run: Path, dataset: str) -> None:
    """Make ``run``'s config.json name ``dataset`` (as if its data file were replaced)."""
    raw = json.loads((run / "config.json").read_text())
    raw["train"]["dataset"] = dataset
    (run / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("command", ["evaluate", "resume"])
@pytest.mark.parametrize(
    ("case", "make", "needle"),
    [(c, m, n[0]) for c, m, _, n in DATA_CASES if c != "grey-for-bernoulli"],  # binarized
    ids=[c for c, *_ in DATA_CASES if c != "grey-for-bernoulli"],
)
def test_bad_data_aimed_at_an_existing_run(
    command: str,
    case: str,
    make: Callable[[Path], str],
    needle: str,
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each bad data file, given to evaluate or found by a resume: refused, run untouched."""
    data = make(tmp_path)
    if command == "resume":
        _point_at(run, data)
        argv = ["train", "--resume", str(run), "--epochs", "2", "--quiet"]
    else:
        argv = ["evaluate", str(run), "--num-samples", "2", "--dataset", data]
    before = snapshot(run)
    refused(argv, capsys, needle)
    assert snapshot(run) == before


def test_bad_data_on_resume_leaves_the_run_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = npy(tmp_path, "x.npy", grey(30))
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--dataset", data, *FAST]) == 0
    capsys.readouterr()
    before = snapshot(out)
    _nan(tmp_path)
    os.replace(tmp_path / "nan.npy", data)
    refused(["train", "--resume", str(out), "--epochs", "2"], capsys, "NaN or infinite")
    assert snapshot(out) == before
    np.save(data, grey(30)[:, :, :4, :4])  # the file now holds items of another shape
    refused(["train", "--resume", str(out), "--epochs", "2"], capsys, "items of shape (1, 8, 8)")
    assert snapshot(out) == before


def test_fewer_rows_than_one_batch_trains_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = npy(tmp_path, "small.npy", grey(30))
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "--dataset", data, *FAST]) == 0
    err = capsys.readouterr().err
    assert "pyro-vae: note: the train split of 'small' has 24 rows, fewer than" in err
    assert "each epoch is one step on all 24 rows" in err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [1, 2]


# --------------------------------------------------------------------------- train: built-ins


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_missing_data_root_and_offline_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new"
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "no-data-here"))
    argv = ["train", "--out", str(out), "--dataset", "mnist", *FAST]
    refused(argv, capsys, "is incomplete", "not found in", "download=True")
    monkeypatch.delenv("PYRO_VAE_DATA")
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYRO_VAE_MIRROR", _closed_port())
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    refused(argv, capsys, "Could not download", "PYRO_VAE_DATA")
    # With many mirrors the list of tried URLs is long; the advice still survives the CLI's
    # one-paragraph cut (it once came after the list and was cut off).
    monkeypatch.delenv("PYRO_VAE_MIRROR")
    monkeypatch.setitem(published.MIRRORS, "mnist", [_closed_port() + "m" * 60 for _ in range(8)])
    err = refused(argv, capsys, "Could not download", "PYRO_VAE_DATA", "Tried: ")
    assert len(err) > 1000  # long enough that the cut applies
    assert not out.exists()


def _damage(kind: str, path: Path) -> None:
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif kind == "flipped":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:  # a well-formed gzip of an IDX file with the wrong magic number
        raw = bytearray(gzip.decompress(bytes(data)))
        raw[2:4] = b"\x08\x03"
        path.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.skipif(not SHARED, reason="needs PYRO_VAE_DATA with mnist/")
@pytest.mark.parametrize(
    ("kind", "needle"),
    # a re-compressed file with a wrong magic number differs in size from the published one,
    # so the size check refuses it first; test_synthetic_idx_files reaches the magic check
    [("truncated", "wrong size"), ("flipped", "failed its checksum"), ("magic", "wrong size")],
)
def test_damaged_builtin_files(
    kind: str,
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Published files are verified before parsing: damage is caught by size or SHA-256."""
    assert SHARED
    root = tmp_path / "root" / "mnist"
    root.mkdir(parents=True)
    for f in (Path(SHARED) / "mnist").iterdir():
        (root / f.name).symlink_to(f)
    target = root / "t10k-labels-idx1-ubyte.gz"
    target.unlink()
    shutil.copyfile(Path(SHARED) / "mnist" / target.name, target)
    _damage(kind, target)
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "root"))
    out = tmp_path / "new"
    refused(["train", "--out", str(out), "--dataset", "mnist", *FAST], capsys, needle, "Delete")
    assert not out.exists()


# Small synthetic MNIST files (the real ones are not needed): 10 010 training images, the
# fewest that leave train rows after the fixed 10 000-image validation split.
IDX_FILES = {
    "train-images-idx3-ubyte.gz": (2051, (10_010, 28, 28)),
    "train-labels-idx1-ubyte.gz": (2049, (10_010,)),
    "t10k-images-idx3-ubyte.gz": (2051, (20, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": (2049, (20,)),
}
TARGET = "t10k-labels-idx1-ubyte.gz"


def idx_gz(magic: int, dims: tuple[int, ...], payload: bytes | None = None) -> bytes:
    """An IDX file of unsigned bytes, gzipped without compression (``compresslevel=0``), so
    that its size depends on its length only: a changed header byte keeps the size."""
    size = int(np.prod(dims))
    if payload is None:
        payload = (np.arange(size) % (10 if len(dims) == 1 else 256)).astype(np.uint8).tobytes()
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return gzip.compress(header + payload, compresslevel=0, mtime=0)


@pytest.fixture(scope="module")
def idx_bytes() -> dict[str, bytes]:
    return {name: idx_gz(*spec) for name, spec in IDX_FILES.items()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make the files now in ``folder`` the published MNIST files (size and SHA-256)."""
    infos = {
        p.name: published.PublishedFile(p.stat().st_size, "", _sha256(p)) for p in folder.iterdir()
    }
    monkeypatch.setitem(published.PUBLISHED_FILES, "mnist", infos)


def _flip_middle(raw: bytes) -> bytes:
    return raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0xFF]) + raw[len(raw) // 2 + 1 :]


# (damage to the test labels, whether the damaged file is published, what refuses it).
# Published files are verified by size and SHA-256 before they are parsed, so damage to a
# published file is refused by those checks; the gzip, magic and byte-count checks are
# reached by a file whose published checksum matches but whose content is wrong, which is
# what publishing the damaged file simulates.
IDX_CASES: list[tuple[str, Callable[[bytes], bytes], bool, tuple[str, ...]]] = [
    ("truncated", lambda raw: raw[: len(raw) // 2], False, ("wrong size", "Delete")),
    ("flipped", _flip_middle, False, ("failed its checksum", "Delete")),
    (
        "magic-right-size",
        lambda raw: idx_gz(2051, (20,)),
        False,
        ("failed its checksum", "Delete"),
    ),
    (
        "magic-published",
        lambda raw: idx_gz(2051, (20,)),
        True,
        ("not an IDX file of the expected kind", "expected magic number 2049", "got magic 2051"),
    ),
    (
        "bad-gzip-published",
        lambda raw: raw[:-12],
        True,
        ("Could not decompress", "truncated or corrupted"),
    ),
    (
        "dims-published",
        lambda raw: idx_gz(2049, (21,), gzip.decompress(raw)[8:]),
        True,
        ("is inconsistent", "dimensions (21,)"),
    ),
]


def synthetic_root(
    tmp_path: Path, idx_bytes: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A data root (also ``$PYRO_VAE_DATA``) holding the synthetic MNIST files, published."""
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for name, raw in idx_bytes.items():
        (folder / name).write_bytes(raw)
    publish(monkeypatch, folder)
    monkeypatch.setenv("PYRO_VAE_DATA", str(folder.parent))
    return folder


@pytest.mark.parametrize(
    ("case", "damage", "published", "needles"), IDX_CASES, ids=[c[0] for c in IDX_CASES]
)
def test_synthetic_idx_files(
    case: str,
    damage: Callable[[bytes], bytes],
    published: bool,
    needles: tuple[str, ...],
    idx_bytes: dict[str, bytes],
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Damaged MNIST files in a data root of small synthetic ones: ``train`` and ``evaluate``
    on an existing run are refused by the check named, and nothing is written."""
    folder = synthetic_root(tmp_path, idx_bytes, monkeypatch)
    assert data.load_dataset("mnist").test.shape == (20, 1, 28, 28)  # loads before the damage
    damaged = damage(idx_bytes[TARGET])
    if case == "magic-right-size":
        assert len(damaged) == len(idx_bytes[TARGET])  # only the magic number differs
    (folder / TARGET).write_bytes(damaged)
    if published:
        publish(monkeypatch, folder)
    out, before = tmp_path / "new", snapshot(run)
    refused(["train", "--out", str(out), "--dataset", "mnist", *FAST], capsys, *needles)
    refused(["evaluate", str(run), "--num-samples", "2", "--dataset", "mnist"], capsys, *needles)
    assert not out.exists() and snapshot(run) == before


def test_synthetic_idx_files_load_through_the_cli(
    idx_bytes: dict[str, bytes],
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The undamaged synthetic root loads through the CLI: evaluate gets as far as the shape
    check (the run was trained on 8x8 digits), so the refusals above are the damage's."""
    synthetic_root(tmp_path, idx_bytes, monkeypatch)
    before = snapshot(run)
    ev = ["evaluate", str(run), "--num-samples", "2", "--dataset", "mnist"]
    refused(ev, capsys, "items of shape (1, 28, 28)")
    assert snapshot(run) == before


# --------------------------------------------------------------------------- train: settings

# train aimed at a new directory, at an existing run (--out) or resuming it (--resume)
TARGETS = ["new", "out", "resume"]
# what a command aimed at an existing run may say instead of the input's own problem
RUN_REFUSALS = (
    "already holds a run",
    "a resumed run keeps the settings",
    "--config cannot be combined with --resume",
)


def _aim(target: str, run: Path, args: list[str]) -> list[str]:
    if target == "resume":
        return ["train", "--resume", str(run), *args]
    return ["train", "--out", str(run.parent / "new" if target == "new" else run), *FAST, *args]


def refused_at(
    target: str, run: Path, args: list[str], capsys: pytest.CaptureFixture[str], needle: str
) -> None:
    """``train args`` aimed at ``target`` is refused naming ``needle`` (or, aimed at an
    existing run, refusing to change it); the run is unchanged and nothing new is made."""
    before = snapshot(run)
    err = refused(_aim(target, run, args), capsys)
    assert needle in err or (target != "new" and any(r in err for r in RUN_REFUSALS)), err
    assert snapshot(run) == before
    assert not (run.parent / "new").exists()


def _registries() -> list[tuple[str, Registry[object]]]:
    """(config field, registry) for every config field that names a registered component."""
    registries = [PRIORS, LIKELIHOODS, GUIDES, NETWORKS, OBJECTIVES]
    fields = {*VAEConfig.__dataclass_fields__, *TrainConfig.__dataclass_fields__}
    return [(r.kind, r) for r in registries if r.kind in fields]  # type: ignore[misc]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("field", "registry"), _registries(), ids=lambda v: str(v))
def test_unknown_component_names_list_the_valid_ones(
    field: str,
    registry: Registry[object],
    target: str,
    run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flag = "--" + field.replace("_", "-")
    valid = f"valid {registry.kind} names are: {', '.join(registry.names())}"
    refused_at(target, run, [flag, "no-such-part"], capsys, valid)
    refused_at(target, run, [flag, f"{registry.names()[0]}:nokey=1"], capsys, "nokey")


SETTING_CASES = [
    (["--likelihood", "normal:scale=-1"], "scale must be a positive"),
    (["--likelihood", "normal:scale=zero"], "scale must be float"),
    (["--guide", "normal:min_scale=0"], "min_scale must be a positive"),
    (["--latent-dim", "0"], "latent_dim must be a positive int"),
    (["--latent-dim", "-2"], "latent_dim must be a positive int"),
    (["--hidden", "0,3"], "hidden must hold positive ints"),
    (["--hidden", "-5"], "hidden must hold positive ints"),
    (["--batch-size", "0"], "batch_size must be a positive int"),
    (["--epochs", "-1"], "epochs must be a positive int"),
    (["--lr", "-0.1"], "lr must be a positive finite number"),
    (["--lr", "inf"], "lr must be a positive finite number"),
    (["--lr", "nan"], "must be a number, got nan"),
    (["--seed", "-1"], "seed must be an int in [0, 2**32)"),
    (["--on-nan", "ignore"], "on_nan must be 'stop' or 'skip'"),
    (["--max-skipped-steps", "-1"], "max_skipped_steps must be an int >= 0"),
    (["--activation", "sigmoidal"], "valid names are"),
    (["--binarize", "always"], "binarize must be 'auto', 'none' or 'dynamic'"),
    (["--device", "tpu"], "device must be auto, cpu, cuda"),
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("flags", "needle"), SETTING_CASES, ids=lambda v: str(v))
def test_bad_settings(
    flags: list[str], needle: str, target: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused_at(target, run, flags, capsys, needle)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[vae]\nlatent_dimm = 3\n", "unknown key(s) ['latent_dimm']"),
        ("[train]\nepochs = 'ten'\n", "train.epochs must be int, got 'ten'"),
        ("[train]\nlr = true\n", "train.lr must be float, got True"),
        ("[vae]\nhidden = 'wide'\n", "vae.hidden must be a list of ints"),
        ("[vae]\nhidden = [1.5]\n", "vae.hidden must be int, got 1.5"),
        ("[vae\n", "is not valid TOML"),
        ("vae = 3\n", "vae must be a table"),
        ("[optimizer]\nlr = 1\n", "unknown key(s) ['optimizer']"),
        ("[train]\nepochs = 99999999999999999999\n", "must fit in a 64-bit int"),
    ],
)
@pytest.mark.parametrize("target", TARGETS)
def test_bad_toml_configs(
    text: str, needle: str, target: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run.parent / "c.toml"
    path.write_text(text)
    refused_at(target, run, ["--config", str(path)], capsys, needle)


@pytest.mark.parametrize("target", TARGETS)
def test_unreadable_toml(target: str, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run.parent / "c.toml").write_bytes(b"\xff\xfe[vae]")
    refused_at(target, run, ["--config", str(run.parent / "c.toml")], capsys, "cannot read config")
    refused_at(target, run, ["--config", str(run.parent / "none.toml")], capsys, "cannot read")


# --------------------------------------------------------------------------- runs


def test_resume_on_what_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(["train", "--resume", str(tmp_path / "nowhere")], capsys, "not a pyro-vae run")
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(empty)
    refused(["train", "--resume", str(empty)], capsys, "not a pyro-vae run directory")
    assert snapshot(empty) == before


def test_resume_on_a_saved_model(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyro_vae import load, save

    saved = save(load(run), tmp_path / "model")
    before = snapshot(saved)
    refused(["train", "--resume", str(saved)], capsys, "holds a saved model", "not a training run")
    assert snapshot(saved) == before


def test_resume_refuses_changed_settings(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run)
    refused(["train", "--resume", str(run), "--lr", "0.01"], capsys, "lr (run: 0.001, given: 0.01)")
    refused(["train", "--resume", str(run), "--hidden", "8"], capsys, "hidden (run: (16,)")
    (run.parent / "c.toml").write_text("[train]\nepochs = 3\n")
    argv = ["train", "--resume", str(run), "--config", str(run.parent / "c.toml")]
    refused(argv, capsys, "--config cannot be combined with --resume")
    argv = ["train", "--resume", str(run), "--out", str(run.parent / "other")]
    refused(argv, capsys, "name different run directories")
    assert snapshot(run) == before


def test_resume_takes_the_run_dir_and_keeps_saved_epochs(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # nothing left to train
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def _drop(name: str) -> Callable[[Path], None]:
    return lambda r: (r / name).unlink()


def _edit_config(change: Callable[[dict[str, object]], None]) -> Callable[[Path], None]:
    def edit(r: Path) -> None:
        raw = json.loads((r / "config.json").read_text())
        change(raw)
        (r / "config.json").write_text(json.dumps(raw))

    return edit


def _set_vae(**values: object) -> Callable[[dict[str, object]], None]:
    return lambda raw: raw["vae"].update(values)  # type: ignore[attr-defined]


def _truncate(name: str) -> Callable[[Path], None]:
    def cut(r: Path) -> None:
        data = (r / name).read_bytes()
        (r / name).write_bytes(data[: len(data) // 2])

    return cut


RUN_CASES: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    ("no-model", _drop("model.safetensors"), ["evaluate"], "missing checkpoint file"),
    ("no-model", _drop("model.safetensors"), ["sample"], "missing checkpoint file"),
    ("no-config", _drop("config.json"), ["evaluate"], "has no config.json"),
    ("no-config", _drop("config.json"), ["resume"], "not a pyro-vae run directory"),
    ("no-checkpoint", _drop("checkpoint.safetensors"), ["resume"], "no checkpoint.safetensors"),
    ("wider", _edit_config(_set_vae(hidden=[32])), ["evaluate"], "do not fit the architecture"),
    ("latent", _edit_config(_set_vae(latent_dim=3)), ["sample"], "do not fit the architecture"),
    ("latent", _edit_config(_set_vae(latent_dim=3)), ["resume"], "do not fit the architecture"),
    ("cut-model", _truncate("model.safetensors"), ["evaluate"], "not a valid safetensors"),
    ("cut-ckpt", _truncate("checkpoint.safetensors"), ["resume"], "not a valid safetensors"),
    ("json", lambda r: (r / "config.json").write_text("{"), ["evaluate"], "not valid JSON"),
    ("format", _edit_config(lambda c: c.pop("format")), ["sample"], "is not a pyro-vae/1"),
]


def _command(kind: str, run: Path) -> list[str]:
    if kind == "evaluate":
        return ["evaluate", str(run), "--num-samples", "2", "--num-points", "5"]
    if kind == "sample":
        return ["sample", str(run), "--num", "4"]
    return ["train", "--resume", str(run), "--epochs", "2", "--quiet"]


@pytest.mark.parametrize(("case", "damage", "commands", "needle"), RUN_CASES, ids=lambda c: c)
def test_damaged_run_directories(
    case: str,
    damage: Callable[[Path], None],
    commands: list[str],
    needle: str,
    run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    damage(run)
    before = snapshot(run)
    for kind in commands:
        refused(_command(kind, run), capsys, needle)
        assert snapshot(run) == before


def test_evaluate_on_other_data(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(run)
    ev = ["evaluate", str(run), "--num-samples", "2", "--dataset"]
    other = npy(tmp_path, "flat.npy", grey(30).reshape(30, 64))
    refused([*ev, other], capsys, "items of shape (64,)", "trained on items of shape (1, 8, 8)")
    refused([*ev, _nan(tmp_path)], capsys, "NaN or infinite")
    refused([*ev, npy(tmp_path, "big.npy", 2 * grey(30))], capsys, "probabilities in [0, 1]")
    assert snapshot(run) == before
    same = npy(tmp_path, "same.npy", grey(30))  # same shape: scored, eval.json written
    assert main([*ev, same, "--split", "valid"]) == 0
    assert json.loads((run / "eval.json").read_text())["num_points"] == 3  # 30 rows: 24/3/3
