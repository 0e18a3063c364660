r"""Training by stochastic variational inference: one code path for Python and the CLI.

Each step maximizes the ELBO of a mini-batch of ``B`` rows with Adam. The loss is the
objective's estimate divided by ``B``, which is the same as ``poutine.scale(scale=1/B)`` on
every site, so every figure is per data point (nats) and comparable across batch sizes.

The hot loop keeps everything on the device: the data are moved there once, batches are
indexed there, the metrics are summed there, and the host reads them only when the progress
bar refreshes and at the end of each epoch. Distribution validation is switched off inside
the loop only; the data are checked against the likelihood's support once, before it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.checkpoint import (
    CheckpointError,
    atomic_write,
    load_state,
    read_tensors,
    save,
    write_json,
    write_tensors,
)
from pyro_vae.config import RunConfig, TrainConfig, from_dict
from pyro_vae.data import Dataset, dynamic_binarize, load_dataset, static_binarize
from pyro_vae.decomposition import elbo_terms
from pyro_vae.evaluate import log_likelihood
from pyro_vae.objectives import batch_terms, build_objective
from pyro_vae.vae import VAE

__all__ = [
    "TEST_BINARIZATION_SEED",
    "VALID_BINARIZATION_SEED",
    "FitResult",
    "TrainingError",
    "evaluation_split",
    "fit",
    "mean_terms",
    "resolve_device",
]

# Valid and test sets are binarized once with fixed seeds, independent of the run's seed,
# so that every run and every seed is scored on the same binary images.
VALID_BINARIZATION_SEED = 1_000_003
TEST_BINARIZATION_SEED = 1_000_033


class TrainingError(RuntimeError):
    """Training could not go on (a non-finite loss, a run directory in the way, ...)."""


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained VAE, one metrics dict per epoch, test summary."""

    vae: VAE
    history: list[dict[str, float]]
    summary: dict[str, float]
    run_dir: Path | None
    config: RunConfig = field(default_factory=RunConfig)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--device {name} was asked for, but torch sees no CUDA device")
    return torch.device(name)


def evaluation_split(dataset: Dataset, split: str, binarize: str) -> torch.Tensor:
    """A valid/test split as scored: binarized once with a fixed seed under ``dynamic``."""
    x = dataset.split(split)
    if binarize == "dynamic":
        seed = TEST_BINARIZATION_SEED if split == "test" else VALID_BINARIZATION_SEED
        return static_binarize(x, seed)
    return x


def _check_data(vae: VAE, dataset: Dataset, binarize: str) -> None:
    for split in ("train", "valid", "test"):
        x = dataset.split(split)
        if binarize == "dynamic":
            if not bool(((x >= 0) & (x <= 1)).all()):
                raise ValueError(
                    f"--binarize dynamic needs values in [0, 1] (pixel intensities), but the "
                    f"{split} split of {dataset.name!r} ranges over [{float(x.min()):.4g}, "
                    f"{float(x.max()):.4g}]. Rescale the data, or use --binarize none with a "
                    "likelihood for continuous data."
                )
            vae.check_data(static_binarize(x[:2], 0))  # shape, dtype
        else:
            vae.check_data(x)


def mean_terms(vae: VAE, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Mean ELBO, reconstruction and KL over ``x`` (nats per data point), in chunks."""
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for xb in x.split(batch_size):
            t = elbo_terms(vae.model, vae.guide, xb)
            parts = (t["elbo"], t["reconstruction"], t["kl"])
            sums += torch.stack([v.double().sum() for v in parts])
    elbo, recon, kl = (sums / x.shape[0]).tolist()
    return {"elbo": elbo, "reconstruction": recon, "kl": kl}


def _state_tensors(
    vae: VAE, opt: torch.optim.Optimizer, gen: torch.Generator
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"model.{k}": v for k, v in vae.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.data"] = gen.get_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"param_groups": opt_state["param_groups"], "optim_scalars": scalars}
    return tensors, meta


def _restore(
    vae: VAE, opt: torch.optim.Optimizer, gen: torch.Generator, path: Path
) -> dict[str, Any]:
    tensors, meta = read_tensors(path)
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state(vae, model, path)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, scalars in meta.get("optim_scalars", {}).items():
        state.setdefault(int(pid), {}).update(scalars)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.data"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


def _prepare_run_dir(config: RunConfig, resume: bool) -> tuple[Path, RunConfig]:
    run_dir = Path(config.train.out)
    if resume:
        path = run_dir / "config.json"
        if not (path.is_file() and (run_dir / "checkpoint.safetensors").is_file()):
            raise CheckpointError(
                f"--resume: {str(run_dir)!r} is not a pyro-vae run directory (it needs "
                "config.json and checkpoint.safetensors). Start a new run without --resume."
            )
        raw = json.loads(path.read_text(encoding="utf-8"))
        saved = from_dict(RunConfig, {k: raw[k] for k in ("vae", "train")}, "config.json")
        train = dataclasses.replace(saved.train, epochs=config.train.epochs)
        return run_dir, dataclasses.replace(saved, train=train)
    if (run_dir / "config.json").exists():
        raise TrainingError(
            f"{str(run_dir)!r} already holds a run. Pass --resume to continue it, or choose "
            "another --out; nothing was changed."
        )
    return run_dir, config


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    lines.append(json.dumps(record))
    atomic_write(path, lambda f: f.write("\n".join(lines) + "\n"), mode="w")


def _truncate_jsonl(path: Path, epochs: int) -> list[dict[str, float]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = [r for r in records if r["epoch"] <= epochs]
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records)), "w")
    return records


def fit(
    config: RunConfig | None = None,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    progress: bool = True,
    write: bool = True,
    on_epoch: Callable[[dict[str, float], VAE], None] | None = None,
) -> FitResult:
    """Train a VAE as ``config`` says; the CLI's ``pyro-vae train`` calls exactly this.

    A fresh run seeds Pyro's RNGs with ``config.train.seed`` (``pyro.set_rng_seed``) before
    building the model, so a seed fixes the initial weights, the data order, the dynamic
    binarization and the guide's noise. With ``write`` the run directory
    ``config.train.out`` receives ``config.json``, ``metrics.jsonl`` (one line per epoch),
    ``timing.jsonl``, ``model.safetensors`` and ``checkpoint.safetensors`` every epoch,
    and ``summary.json`` at the end. ``resume=True`` continues a run from its checkpoint.
    ``dataset`` overrides loading ``config.train.dataset`` (its ``name`` is recorded).
    """
    config = config or RunConfig()
    build_objective(config.train.objective)  # a bad spec fails before anything is written
    run_dir, config = _prepare_run_dir(config, resume) if write else (None, config)
    tc = config.train
    device = resolve_device(tc.device)
    dataset = dataset or load_dataset(tc.dataset, progress=progress)
    vae_config = dataclasses.replace(config.vae, data_shape=dataset.data_shape)
    config = dataclasses.replace(config, vae=vae_config)
    if not resume:
        pyro.set_rng_seed(tc.seed)
    vae = VAE(vae_config)
    _check_data(vae, dataset, tc.binarize)
    vae.to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=tc.lr)
    gen = torch.Generator(device=device).manual_seed(tc.seed)
    history: list[dict[str, float]] = []
    start_epoch = 1
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            meta = _restore(vae, opt, gen, run_dir / "checkpoint.safetensors")
            history = _truncate_jsonl(run_dir / "metrics.jsonl", meta["epoch"])
            _truncate_jsonl(run_dir / "timing.jsonl", meta["epoch"])
            start_epoch = meta["epoch"] + 1
        else:
            save(vae, run_dir, run_config=config)
    train_x = dataset.split("train").to(device)
    valid_x = evaluation_split(dataset, "valid", tc.binarize).to(device)
    loop = _Loop(vae, opt, gen, tc, train_x, progress)
    loop.bar.update((start_epoch - 1) * loop.steps_per_epoch)
    try:
        for epoch in range(start_epoch, tc.epochs + 1):
            record, timing = loop.epoch(epoch)
            record.update({f"valid_{k}": v for k, v in mean_terms(vae, valid_x).items()})
            history.append(record)
            if run_dir is not None:
                _write_epoch(run_dir, vae, opt, gen, config, record, timing)
            if on_epoch is not None:
                on_epoch(record, vae)
    finally:
        loop.close()
    summary = summarize(vae, dataset, tc, device)
    if run_dir is not None:
        write_json(run_dir / "summary.json", summary)
    return FitResult(vae, history, summary, run_dir, config)


def summarize(vae: VAE, dataset: Dataset, tc: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Test ELBO terms over the whole test split and the IW NLL on a seeded subset."""
    test_x = evaluation_split(dataset, "test", tc.binarize).to(device)
    summary: dict[str, Any] = {f"test_{k}": v for k, v in mean_terms(vae, test_x).items()}
    num_points = min(tc.eval_num_points, test_x.shape[0])
    if num_points > 0:
        idx = torch.randperm(test_x.shape[0], generator=torch.Generator().manual_seed(0))
        subset = test_x[idx[:num_points].to(device)]
        ll = log_likelihood(vae.model, vae.guide, subset, num_samples=tc.eval_num_samples)
        summary.update(
            test_nll=-float(ll.mean()),
            nll_num_samples=tc.eval_num_samples,
            nll_num_points=num_points,
        )
    return summary


def _write_epoch(
    run_dir: Path,
    vae: VAE,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    config: RunConfig,
    record: dict[str, float],
    timing: dict[str, float],
) -> None:
    # metrics first, then the checkpoint: a crash in between re-runs the epoch on resume,
    # and the resumed run truncates metrics.jsonl to the checkpoint's epoch.
    _append_jsonl(run_dir / "metrics.jsonl", record)
    _append_jsonl(run_dir / "timing.jsonl", timing)
    tensors, meta = _state_tensors(vae, opt, gen)
    meta.update(epoch=int(record["epoch"]), step=int(record["step"]))
    write_tensors(run_dir / "checkpoint.safetensors", tensors, meta)
    write_tensors(run_dir / "model.safetensors", vae.state_dict())


class _Loop:
    """The hot loop of one training run: device-resident data, no per-step host sync."""

    def __init__(
        self,
        vae: VAE,
        opt: torch.optim.Optimizer,
        gen: torch.Generator,
        tc: TrainConfig,
        train_x: torch.Tensor,
        progress: bool,
    ) -> None:
        self.vae, self.opt, self.gen, self.tc, self.train_x = vae, opt, gen, tc, train_x
        self.objective = build_objective(tc.objective, num_particles=tc.num_particles)
        self.loss_fn = self.objective(vae.model, vae.guide)
        self.steps_per_epoch = math.ceil(train_x.shape[0] / tc.batch_size)
        self.bar = tqdm(
            total=tc.epochs * self.steps_per_epoch,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )

    def close(self) -> None:
        self.bar.close()

    def epoch(self, epoch: int) -> tuple[dict[str, float], dict[str, float]]:
        tc, x = self.tc, self.train_x
        self.bar.set_description(f"epoch {epoch}/{tc.epochs}")
        if hasattr(self.objective, "set_epoch"):  # e.g. a KL warm-up: a function of the epoch
            self.objective.set_epoch(epoch)
        start = time.perf_counter()
        if tc.binarize == "dynamic":
            x = dynamic_binarize(x, self.gen)  # (N, *data_shape), redrawn each epoch
        perm = torch.randperm(x.shape[0], generator=self.gen, device=x.device)  # (N,)
        sums = torch.zeros(3, dtype=torch.float64, device=x.device)  # loss, recon, kl
        shown, last = 0, start
        with pyro.validation_enabled(False):
            for step, idx in enumerate(perm.split(tc.batch_size), start=1):
                sums += self._step(x[idx])
                now = time.perf_counter()  # the host reads the device twice a second at most
                if now - last > 0.5 and not self.bar.disable:
                    self._show(sums, step * tc.batch_size)
                    self.bar.update(step - shown)
                    shown, last = step, now
        self._show(sums, x.shape[0])
        self.bar.update(self.steps_per_epoch - shown)
        loss, recon, kl = (sums / x.shape[0]).tolist()
        seconds = time.perf_counter() - start
        if not all(math.isfinite(v) for v in (loss, recon, kl)):
            raise TrainingError(
                f"the training loss became non-finite in epoch {epoch} (reconstruction "
                f"{recon}, KL {kl}). Lower --lr, or check the data."
            )
        record = {
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "train_loss": loss,
            "train_elbo": recon - kl,
            "train_reconstruction": recon,
            "train_kl": kl,
            "train_objective": -loss,  # the training objective's own value (a bound, nats)
        }
        if hasattr(self.objective, "kl_weight"):
            record["kl_weight"] = float(self.objective.kl_weight)
        timing = {"epoch": epoch, "seconds": seconds, "images_per_s": x.shape[0] / seconds}
        return record, timing

    def _step(self, xb: torch.Tensor) -> torch.Tensor:
        b = xb.shape[0]
        loss = self.loss_fn(xb) / b  # nats per data point
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        recon, kl = batch_terms(self.objective, self.vae.model, self.vae.guide, xb)  # true terms
        return torch.stack([loss.detach() * b, recon, kl]).double()

    def _show(self, sums: torch.Tensor, seen: int) -> None:
        if self.bar.disable:
            return
        _loss, recon, kl = (sums / seen).tolist()
        self.bar.set_postfix(elbo=f"{recon - kl:.2f}", rec=f"{recon:.2f}", kl=f"{kl:.2f}")
