"""Numerical faults, Ctrl-C and SIGKILL: training stops cleanly, resumes exactly, loses nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import faulty
import pytest
import torch
from safetensors.torch import load_file

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit, load
from pyro_vae.cli.main import main
from pyro_vae.nn import NETWORKS
from pyro_vae.plugins import PLUGIN_MODULE_PREFIX
from pyro_vae.training.checkpoint import read_tensors, write_tensors
from pyro_vae.training.errors import NonFiniteError, TrainingInterrupted
from pyro_vae.training.rundir import resume_config

TINY = dict(eval_num_samples=2, eval_num_points=10)
# digits: 1297 train rows; batch 100 -> 13 steps per epoch, and one decoder call per step
# plus one for the validation split per epoch. Decoder call 20 is epoch 2, step 6.
STEPS = 13


@pytest.fixture
def faulty_net() -> Iterator[str]:
    with faulty.registered() as name:
        yield name


def _config(out: Path, network: str, epochs: int = 2, **train: object) -> RunConfig:
    vae = VAEConfig(latent_dim=2, hidden=(16,), network=network)
    return RunConfig(vae, TrainConfig(epochs=epochs, out=str(out), seed=5, **TINY, **train))  # type: ignore[arg-type]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def _same_run(a: Path, b: Path) -> None:
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ta, _ = read_tensors(a / "checkpoint.safetensors")
    tb, _ = read_tensors(b / "checkpoint.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


# --------------------------------------------------------------------------- NaN and Inf


def test_nan_from_the_decoder_stops_with_epoch_step_term_and_site(
    faulty_net: str, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    saved: dict[int, bytes] = {}

    def keep(record: dict[str, float], vae: object) -> None:
        saved[int(record["epoch"])] = (run / "checkpoint.safetensors").read_bytes()

    config = _config(run, f"{faulty_net}:first=20,count=3")
    with pytest.raises(NonFiniteError) as info:
        fit(config, progress=False, on_epoch=keep)
    message = str(info.value)
    assert "epoch 2, step 6 of 13" in message
    assert "reconstruction term at site 'x'" in message and "logits" in message
    assert "after epoch 1" in message and "intact" in message
    assert info.value.diagnosis.term == "reconstruction" and info.value.diagnosis.site == "x"
    # the last good checkpoint is byte for byte the one written after epoch 1, and loads
    assert list(saved) == [1]
    assert (run / "checkpoint.safetensors").read_bytes() == saved[1]
    assert read_tensors(run / "checkpoint.safetensors")[1]["epoch"] == 1
    assert torch.isfinite(torch.cat([p.flatten() for p in load(run).parameters()])).all()
    # resumed with --on-nan skip, the run skips the three bad steps and finishes
    result = fit(resume_config(run, on_nan="skip"), resume=True, progress=False)
    assert [r["skipped_steps"] for r in result.history] == [0, 3]
    assert all(torch.isfinite(torch.tensor(r["train_elbo"])) for r in result.history)


def test_nan_gradient_with_a_finite_loss_is_named(faulty_net: str, tmp_path: Path) -> None:
    config = _config(tmp_path / "run", f"{faulty_net}:first=20,count=2,grad=true")
    with pytest.raises(NonFiniteError) as info:
        fit(config, progress=False)
    message = str(info.value)
    assert "epoch 2, step 6 of 13" in message and "the loss was finite" in message
    assert "reconstruction term at site 'x'" in message and "gradient is non-finite" in message
    assert info.value.diagnosis.stage == "gradient"


def test_skip_counts_steps_and_stops_past_the_limit(faulty_net: str, tmp_path: Path) -> None:
    net = f"{faulty_net}:first=20,count=3"
    result = fit(_config(tmp_path / "a", net, on_nan="skip"), progress=False)
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["skipped_steps"] for s in lines] == [0, 3]
    assert result.history[1]["skipped_steps"] == 3
    limit = r"3 steps were skipped .* more than TrainConfig\(max_skipped_steps=2\) allows"
    with pytest.raises(NonFiniteError, match=limit):
        fit(_config(tmp_path / "b", net, on_nan="skip", max_skipped_steps=2), progress=False)


def test_skipped_steps_change_nothing(faulty_net: str) -> None:
    """A run that skips a NaN step ends where a run that never took that step ends."""
    clean = fit(_config(Path("unused"), "mlp", epochs=1), write=False, progress=False)
    # the same run with the NaN on decoder call 1: its only effect is one skipped step
    skipped = fit(
        _config(Path("unused"), f"{faulty_net}:first=1,count=1", epochs=1, on_nan="skip"),
        write=False,
        progress=False,
    )
    assert skipped.history[0]["skipped_steps"] == 1
    assert clean.history[0]["skipped_steps"] == 0
    assert clean.history[0]["train_loss"] != skipped.history[0]["train_loss"]
    for p in skipped.vae.parameters():
        assert torch.isfinite(p).all()


NAN_PLUGIN = '''"""A network pair whose encoder or decoder emits NaN on some calls (a fault)."""

import torch
from torch import nn

from pyro_vae.nn import NETWORKS, MLPPair


class NanOnCalls(nn.Module):
    """``net`` whose output is NaN on calls ``first`` .. ``first + count - 1``. The count is a
    buffer, so the replay that diagnoses the fault restores it and meets the NaN again."""

    calls: torch.Tensor

    def __init__(self, net: nn.Module, first: int, count: int) -> None:
        super().__init__()
        self.net, self.first, self.count = net, first, count
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        hit = (self.calls >= self.first) & (self.calls < self.first + self.count)
        return torch.where(hit, float("nan"), self.net(x))


@NETWORKS.register("nan-mlp")
class NanPair:
    """The MLP pair; ``part`` (encoder or decoder) emits NaN on calls ``first`` onwards."""

    def __init__(
        self, data_shape, latent_dim, hidden, act, decoder_out, *,
        part: str = "decoder", first: int = 10**9, count: int = 3,
    ) -> None:
        pair = MLPPair(data_shape, latent_dim, hidden, act, decoder_out)
        self.encoder, self.decoder, self.feature_dim = pair.encoder, pair.decoder, pair.feature_dim
        if part == "encoder":
            self.encoder = NanOnCalls(pair.encoder, first, count)
        else:
            self.decoder = NanOnCalls(pair.decoder, first, count)
'''


@pytest.fixture
def nan_plugin(tmp_path: Path) -> Iterator[str]:
    """The plugin file above; its network is unregistered again after the test."""
    path = tmp_path / "nan_plugin.py"
    path.write_text(NAN_PLUGIN)
    yield str(path)
    NETWORKS._entries.pop("nan-mlp", None)
    for name in [m for m in sys.modules if m.startswith(PLUGIN_MODULE_PREFIX + "nan_plugin")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("part", "names"),
    [
        ("decoder", ("the reconstruction term at site 'x'", "non-finite logits")),
        ("encoder", ("the KL term at site 'z'", "q(z|x) has non-finite loc, scale")),
    ],
)
def test_nan_injected_through_a_cli_plugin_names_epoch_step_term_and_site(
    part: str,
    names: tuple[str, ...],
    nan_plugin: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``pyro-vae train --plugin`` with a network whose decoder (or encoder) emits NaN at
    call 20, epoch 2 step 6 (13 steps and one validation call an epoch): exit 2, the
    message names where and what, and the checkpoint after epoch 1 loads and resumes."""
    run, clean = tmp_path / "run", tmp_path / "clean"
    argv = ["train", "--plugin", nan_plugin, "--seed", "5", "--hidden", "16", "--latent-dim"]
    argv += ["2", "--quiet", "--eval-num-samples", "2", "--eval-num-points", "10"]
    net = ["--network", f"nan-mlp:part={part}"]
    assert main([*argv, *net, "--out", str(clean), "--epochs", "1"]) == 0  # never NaN
    capsys.readouterr()
    assert main([*argv, *net[:1], f"{net[1]},first=20", "--out", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error: training stopped") and "Traceback" not in err
    assert "non-finite at epoch 2, step 6 of 13" in err
    for name in names:
        assert name in err, err
    assert f"{str(run / 'checkpoint.safetensors')!r} (after epoch 1), is intact" in err
    # the checkpoint left is, byte for byte, the one a run without the fault writes after
    # epoch 1, and it loads
    ckpt = (run / "checkpoint.safetensors").read_bytes()
    assert ckpt == (clean / "checkpoint.safetensors").read_bytes()
    tensors, meta = read_tensors(run / "checkpoint.safetensors")
    assert meta["epoch"] == 1 and meta["partial"] is None
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert torch.isfinite(torch.cat([p.flatten() for p in load(run).parameters()])).all()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    resume = ["train", "--plugin", nan_plugin, "--resume", str(run), "--on-nan", "skip"]
    assert main([*resume, "--quiet"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["skipped_steps"] for s in lines] == [0, 3]


# --------------------------------------------------------------------------- reproducibility


RUN_FILES = ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl")


def test_same_seed_gives_the_same_files_byte_for_byte(tmp_path: Path) -> None:
    a = fit(_config(tmp_path / "a", "mlp", epochs=2), progress=False)
    b = fit(_config(tmp_path / "b", "mlp", epochs=2), progress=False)
    assert a.history == b.history and a.summary == b.summary
    _same_run(tmp_path / "a", tmp_path / "b")
    for name in RUN_FILES:  # not only equal tensors: equal bytes, as cmp sees them
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_equal_tensors_and_metadata_give_equal_bytes(tmp_path: Path) -> None:
    """safetensors orders the metadata of each file by a hash seeded anew for every map
    (two keys: either order, at random); written files must not depend on it."""
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    blobs = set()
    for i in range(24):
        write_tensors(tmp_path / f"{i}.safetensors", tensors, {"epoch": 3, "step": [1, 2]})
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    loaded, meta = read_tensors(tmp_path / "0.safetensors")
    assert meta == {"epoch": 3, "step": [1, 2]}
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert torch.equal(load_file(tmp_path / "0.safetensors")["w"], tensors["w"])


# --------------------------------------------------------------------------- Ctrl-C


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler for the test (the runner may have SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("python_sigint")
def test_ctrl_c_mid_epoch_writes_that_state_and_resumes_bit_identically(
    faulty_net: str, tmp_path: Path
) -> None:
    fit(_config(tmp_path / "full", faulty_net), progress=False)  # the same, never interrupted
    with pytest.raises(TrainingInterrupted, match="at epoch 2, step 8 of 13"):
        fit(_config(tmp_path / "cut", f"{faulty_net}:interrupt=22"), progress=False)  # step 8
    _, meta = read_tensors(tmp_path / "cut" / "checkpoint.safetensors")
    assert meta["epoch"] == 1 and meta["partial"]["steps_done"] == 8
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 1
    fit(resume_config(tmp_path / "cut"), resume=True, progress=False)
    _same_run(tmp_path / "full", tmp_path / "cut")


# --------------------------------------------------------------------------- subprocesses

FLAGS = ["--hidden", "16", "--latent-dim", "2", "--quiet", "--seed", "7"]
FLAGS += ["--eval-num-samples", "2", "--eval-num-points", "10", "--batch-size", "50"]


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default disposition, whatever the parent's (a shell
    runs background jobs with SIGINT ignored, and the child would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pyro_vae", "train", *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_default_sigint,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("pyro-vae train:")  # imports done, data loading
    return proc


def test_ctrl_c_in_a_subprocess_exits_130_with_a_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # 30 epochs of ~0.05 s: the signal lands mid-run even on an idle machine (with 3, the
    # run sometimes finished before it arrived and exited 0)
    proc = _start(["--epochs", "30", "--out", str(run), *FLAGS])
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 0.1))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and f"--resume {run}" in err and "Traceback" not in err
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert main(["train", "--epochs", "30", "--out", str(tmp_path / "full"), *FLAGS]) == 0
    _same_run(tmp_path / "full", run)


# 7 steps an epoch (batch 200 of 1297 rows): short epochs, so that 12 of them hold three
# kills (each about 3 to 4.5 epochs past the checkpoint its process started from) and cost
# little to train twice
KILL_EPOCHS = 12
KILL_FLAGS = [*FLAGS[:-2], "--batch-size", "200"]


def _lines(path: Path) -> int:
    """Lines of ``path`` now (0 while it does not exist)."""
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _epoch_done(run: Path) -> int:
    """The epoch of the run's checkpoint (0 while there is none)."""
    path = run / "checkpoint.safetensors"
    return int(read_tensors(path)[1]["epoch"]) if path.exists() else 0


def _await_lines(proc: subprocess.Popen[str], metrics: Path, count: int) -> float:
    """Wait until ``metrics`` has ``count`` lines or ``proc`` has ended; return the time."""
    deadline = time.monotonic() + 120
    while _lines(metrics) < count and proc.poll() is None:
        assert time.monotonic() < deadline, "training made no progress in 120 s"
        time.sleep(0.005)
    return time.monotonic()


def _kill_mid_run(proc: subprocess.Popen[str], run: Path, rng: random.Random) -> None:
    """SIGKILL ``proc`` at a random moment once it is training, timed in its own epochs.

    The clock starts when this process has itself finished an epoch: ``metrics.jsonl`` holds
    at most one line past the checkpoint (metrics are written first), so line ``done + 2`` is
    new. One more epoch measures its length, and the kill lands up to 1.5 epochs later: in
    a step, an evaluation or a checkpoint write.
    """
    metrics, done = run / "metrics.jsonl", _epoch_done(run)
    began = _await_lines(proc, metrics, done + 2)
    ended = _await_lines(proc, metrics, done + 3)
    time.sleep(rng.uniform(0.0, 1.5) * (ended - began))
    proc.kill()
    proc.communicate(timeout=60)


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path: Path) -> None:
    """Three SIGKILLs at random moments of training, each followed by a resume; every kill
    leaves a checkpoint that loads, and the resumed run ends byte for byte as the run that
    was never killed (weights, checkpoint, metrics.jsonl)."""
    run, rng = tmp_path / "run", random.Random(1)
    landed: list[tuple[int, int]] = []  # (return code, epoch of the checkpoint left)
    fresh = ["--epochs", str(KILL_EPOCHS), "--out", str(run), *KILL_FLAGS]
    for i in range(3):
        proc = _start(["--resume", str(run), "--quiet"] if i else fresh)
        before = _epoch_done(run)
        _kill_mid_run(proc, run, rng)
        tensors, meta = read_tensors(run / "checkpoint.safetensors")  # never a broken one
        assert meta["epoch"] >= before and tensors  # the previous checkpoint, or a newer one
        assert torch.isfinite(torch.cat([p.flatten() for p in load(run).parameters()])).all()
        landed.append((proc.returncode, meta["epoch"]))
    killed = [epoch for code, epoch in landed if code == -signal.SIGKILL]
    assert any(1 <= epoch < KILL_EPOCHS for epoch in killed), landed
    # a kill inside a write leaves its temporary file: it must not get in the way of resume
    (run / ".checkpoint.safetensors.stray.tmp").write_bytes(b"half a checkpoint")
    (run / ".model.safetensors.stray.tmp").write_bytes(b"")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    full = tmp_path / "full"
    assert main(["train", "--epochs", str(KILL_EPOCHS), "--out", str(full), *KILL_FLAGS]) == 0
    _same_run(full, run)
    for name in RUN_FILES:
        assert (full / name).read_bytes() == (run / name).read_bytes(), (name, landed)
