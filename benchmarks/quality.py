r"""Quality benchmark: pyro-vae against a hand-written PyTorch VAE on binarized MNIST.

Run from the repository root::

    PYRO_VAE_DATA=/path/to/data python -m benchmarks.quality --epochs 5 20 \
        --out benchmarks/results/quality.json

Both models have the one-stochastic-layer architecture of the IWAE paper (Burda, Grosse &
Salakhutdinov 2015, section 5): encoder 784-200-200 tanh to a diagonal Normal over 50
latents, decoder 50-200-200-784 to Bernoulli logits, batch 100, Adam with learning rate
1e-3. pyro-vae trains through :func:`pyro_vae.fit` (the code path of ``pyro-vae train``);
the reference is :class:`benchmarks.reference.ReferenceVAE`, started from a copy of
pyro-vae's initial weights and fed the same mini-batches in the same order. Its noise comes
from its own generator, so the two runs differ by implementation and by Monte Carlo noise.

The two are trained interleaved, epoch by epoch, in one process (pyro-vae's epoch ``e``,
then the reference's epoch ``e``), so that load from other processes falls on both alike.
After each epoch listed in ``--epochs`` both are scored on the same test points: the IW
NLL :math:`-\mathcal{L}_k` (k=1000) on a seeded random subset of 1000 test points (the
subset ``pyro-vae evaluate --num-points 1000`` scores) and the ELBO over the whole test split
(analytic KL). Evaluation runs in a forked RNG, so pyro-vae's training draws are those of a
plain ``pyro-vae train`` with the same seed.

``binarized-mnist`` is Larochelle's fixed binarization, already in {0, 1}, so it is used
with ``--binarize none``: dynamic binarization of 0/1 pixels would draw x ~ Bernoulli(x) = x,
spending time for nothing, and the published static-MNIST figures are on these fixed images.

Results go to the JSON file ``--out`` and a markdown table beside it (same name, ``.md``);
``--render FILE.json`` rewrites that table from stored results without training.
The exit status is 1 when the test NLLs differ by more than ``--tolerance`` nats.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

import pyro_vae
from benchmarks.reference import ReferenceVAE, train_epoch
from pyro_vae import VAE, Dataset, RunConfig, TrainConfig, VAEConfig, fit, load_dataset
from pyro_vae.cli.main import subset
from pyro_vae.data import dynamic_binarize
from pyro_vae.infer.importance import log_likelihood
from pyro_vae.training.fit import evaluation_split, mean_terms

__all__ = ["initial_reference", "main", "markdown", "run"]

# The IWAE paper's one-stochastic-layer MNIST model and its optimiser (section 5).
HIDDEN = (200, 200)
ACTIVATION = "tanh"
LATENT_DIM = 50
BATCH_SIZE = 100
LR = 1e-3
MODELS = ("pyro-vae", "reference")
NOISE_SEED_OFFSET = 1  # the reference's noise generator: seed + 1, independent of pyro's
EVAL_SEED = 0  # the test subset (as `pyro-vae evaluate --seed 0`) and the evaluation noise


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Test NLL and time per epoch: pyro-vae vs a hand-written PyTorch VAE.",
    )
    p.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=[5, 20],
        help="evaluate after these epochs; trains for the largest (default: 5 20)",
    )
    p.add_argument("--dataset", default="binarized-mnist", help="data set name or path")
    p.add_argument(
        "--binarize",
        choices=("none", "dynamic"),
        default="none",
        help="none for already-binary data (binarized-mnist); dynamic for grey values",
    )
    p.add_argument("--seed", type=int, default=0, help="initial weights and data order")
    p.add_argument("--num-samples", type=int, default=1000, help="k of the IW NLL")
    p.add_argument("--num-points", type=int, default=1000, help="test points for the IW NLL")
    p.add_argument(
        "--train-points", type=int, default=None, help="train on a seeded subset (default: all)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--tolerance", type=float, default=1.0, help="allowed |NLL difference|, nats")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/quality.json"),
        help="JSON results; the markdown table goes beside it as .md",
    )
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only rewrite the markdown table of an earlier run's JSON results (no training)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny run that checks the benchmark works: 1 epoch on 2,000 training points, "
        "k=10 on 50 test points",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.num_samples, args.num_points = [1], 10, 50
        args.train_points = 2000 if args.train_points is None else args.train_points
    if min(args.epochs) < 1 or args.num_samples < 1 or args.num_points < 1:
        p.error("--epochs, --num-samples and --num-points must be positive")
    args.epochs = sorted(set(args.epochs))
    return args


def _command(argv: Sequence[str]) -> str:
    data = os.environ.get("PYRO_VAE_DATA")
    prefix = f"PYRO_VAE_DATA={shlex.quote(data)} " if data else ""
    return f"{prefix}python -m benchmarks.quality {shlex.join(argv)}".rstrip()


def machine() -> dict[str, Any]:
    """CPU, core count, threads and library versions of this process."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "pyro_vae": pyro_vae.__version__,
        "git_commit": commit,
    }


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


def _dataset(args: argparse.Namespace) -> Dataset:
    ds = load_dataset(args.dataset, progress=False)
    if args.train_points is None or args.train_points >= ds.train.shape[0]:
        return ds
    idx = subset(ds.train.shape[0], args.train_points, args.seed)
    return Dataset(ds.name, ds.train[idx], ds.valid, ds.test)


def initial_reference(vae_config: VAEConfig, seed: int) -> ReferenceVAE:
    """The reference with the initial weights that :func:`pyro_vae.fit` gives ``seed``.

    ``fit`` seeds Pyro with the run's seed and then builds ``VAE(config)``; this does the same
    in a forked RNG (the caller's RNG state is left as it was) and copies the weights.
    """
    with torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(seed)
        return ReferenceVAE.from_pyro_vae(VAE(vae_config))


def _evaluate_pyro(
    vae: VAE, test_x: torch.Tensor, points: torch.Tensor, k: int
) -> dict[str, float]:
    torch.manual_seed(EVAL_SEED)
    result = {f"test_{key}": v for key, v in mean_terms(vae, test_x).items()}
    ll = log_likelihood(vae.model, vae.guide, points, num_samples=k)  # (P,)
    result["test_nll"] = -float(ll.double().mean())
    return result


def _evaluate_reference(
    ref: ReferenceVAE, test_x: torch.Tensor, points: torch.Tensor, k: int
) -> dict[str, float]:
    gen = torch.Generator().manual_seed(EVAL_SEED)
    sums = torch.zeros(3, dtype=torch.float64)  # elbo, reconstruction, kl
    with torch.no_grad():
        for xb in test_x.split(1000):
            t = ref.elbo_terms(xb, analytic_kl=True, generator=gen)
            sums += torch.stack([t[key].double().sum() for key in ("elbo", "reconstruction", "kl")])
    elbo, recon, kl = (sums / test_x.shape[0]).tolist()
    ll = ref.log_likelihood(points, k, generator=gen)  # (P,)
    nll = -float(ll.double().mean())
    return {"test_elbo": elbo, "test_reconstruction": recon, "test_kl": kl, "test_nll": nll}


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Train both models interleaved, evaluate at the checkpoints, return the results."""
    torch.set_num_threads(args.threads)
    load_start = _load_average()
    ds = _dataset(args)
    vae_config = VAEConfig(
        data_shape=ds.data_shape,
        latent_dim=LATENT_DIM,
        hidden=HIDDEN,
        activation=ACTIVATION,
    )
    ref = initial_reference(vae_config, args.seed)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=LR)
    order = torch.Generator().manual_seed(args.seed)  # as fit's data-order generator
    noise = torch.Generator().manual_seed(args.seed + NOISE_SEED_OFFSET)
    test_x = evaluation_split(ds, "test", args.binarize)
    points = test_x[subset(test_x.shape[0], min(args.num_points, test_x.shape[0]), EVAL_SEED)]
    epochs: dict[str, list[dict[str, float]]] = {m: [] for m in MODELS}
    evaluations: dict[str, dict[str, dict[str, float]]] = {m: {} for m in MODELS}

    with tempfile.TemporaryDirectory() as run_dir:
        timing_file = Path(run_dir) / "timing.jsonl"

        def on_epoch(record: dict[str, float], vae: VAE) -> None:
            epoch = int(record["epoch"])
            timing = json.loads(timing_file.read_text().splitlines()[-1])
            epochs["pyro-vae"].append(
                {"epoch": epoch, "train_loss": record["train_loss"], "seconds": timing["seconds"]}
            )
            start = time.perf_counter()
            x = ds.train if args.binarize == "none" else dynamic_binarize(ds.train, order)
            loss = train_epoch(ref, ref_opt, x, BATCH_SIZE, order, noise)
            seconds = time.perf_counter() - start
            epochs["reference"].append({"epoch": epoch, "train_loss": loss, "seconds": seconds})
            print(
                f"epoch {epoch:>3}/{max(args.epochs)}  pyro-vae loss "
                f"{record['train_loss']:.3f} ({timing['seconds']:.1f} s)  "
                f"reference loss {loss:.3f} ({seconds:.1f} s)",
                flush=True,
            )
            if epoch in args.epochs:
                _checkpoint(epoch, vae)

        def _checkpoint(epoch: int, vae: VAE) -> None:
            for name in MODELS:
                start = time.perf_counter()
                with torch.random.fork_rng(devices=[]):
                    if name == "pyro-vae":
                        result = _evaluate_pyro(vae, test_x, points, args.num_samples)
                    else:
                        result = _evaluate_reference(ref, test_x, points, args.num_samples)
                result["eval_seconds"] = time.perf_counter() - start
                evaluations[name][str(epoch)] = result
                print(
                    f"  {name:<10} after {epoch} epochs: test NLL {result['test_nll']:.3f} "
                    f"(k={args.num_samples}, {points.shape[0]} points), test ELBO "
                    f"{result['test_elbo']:.3f}",
                    flush=True,
                )

        train = TrainConfig(
            dataset=ds.name,
            binarize=args.binarize,
            epochs=max(args.epochs),
            batch_size=BATCH_SIZE,
            lr=LR,
            seed=args.seed,
            device="cpu",
            out=run_dir,
            eval_num_points=0,  # the NLL is scored here, at every checkpoint, for both
        )
        fit(
            RunConfig(vae=vae_config, train=train),
            dataset=ds,
            progress=False,
            write=True,  # for timing.jsonl, the trainer's own time per epoch
            on_epoch=on_epoch,
        )

    models = {
        name: {
            "seconds_per_epoch": statistics.median(e["seconds"] for e in epochs[name]),
            "epochs": epochs[name],
            "evaluations": evaluations[name],
        }
        for name in MODELS
    }
    diffs = {
        e: evaluations["pyro-vae"][e]["test_nll"] - evaluations["reference"][e]["test_nll"]
        for e in evaluations["pyro-vae"]
    }
    return {
        "benchmark": "quality",
        "command": _command(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": {"start": load_start, "end": _load_average()},
        "setup": {
            "dataset": ds.name,
            "binarize": args.binarize,
            "train_points": int(ds.train.shape[0]),
            "data_shape": list(ds.data_shape),
            "hidden": list(HIDDEN),
            "activation": ACTIVATION,
            "latent_dim": LATENT_DIM,
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "optimizer": "Adam (torch defaults besides lr)",
            "seed": args.seed,
            "reference_noise_seed": args.seed + NOISE_SEED_OFFSET,
            "epochs": max(args.epochs),
            "checkpoints": args.epochs,
            "num_samples": args.num_samples,
            "num_points": int(points.shape[0]),
            "test_elbo_points": int(test_x.shape[0]),
            "threads": args.threads,
            "smoke": args.smoke,
        },
        "models": models,
        "check": {
            "tolerance_nats": args.tolerance,
            "nll_difference": diffs,  # pyro-vae minus reference, per checkpoint
            "passed": all(abs(d) <= args.tolerance for d in diffs.values()),
        },
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown section: setup, table, timing and the check."""
    s, m, c = results["setup"], results["machine"], results["check"]
    ev = {name: results["models"][name]["evaluations"] for name in MODELS}
    lines = [
        "# Quality: pyro-vae vs a hand-written PyTorch VAE",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {s['threads']} torch threads; torch "
        f"{m['torch']}, pyro {m['pyro']}, pyro-vae {m['pyro_vae']} ({m['git_commit']}). "
        f"Date: {results['date']}. Load average (1, 5, 15 min) at start "
        f"{results['load_average']['start']}, at end {results['load_average']['end']}.",
        "",
        f"Setup: {s['dataset']} ({s['train_points']} training points, binarize "
        f"{s['binarize']}), {math.prod(s['data_shape'])}-{'-'.join(map(str, s['hidden']))}-"
        f"{s['latent_dim']} {s['activation']}, batch {s['batch_size']}, Adam lr {s['lr']}, "
        f"seed {s['seed']}. Test NLL: IW bound with k={s['num_samples']} on "
        f"{s['num_points']} seeded test points; test ELBO over {s['test_elbo_points']} test "
        "points (analytic KL). Nats per data point.",
        "",
        "| model | epochs | test NLL | test ELBO | reconstruction | KL |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for epoch in (str(e) for e in s["checkpoints"]):
        for name in MODELS:
            r = ev[name][epoch]
            lines.append(
                f"| {name} | {epoch} | {r['test_nll']:.2f} | {r['test_elbo']:.2f} | "
                f"{r['test_reconstruction']:.2f} | {r['test_kl']:.2f} |"
            )
    lines += [
        "",
        "| model | s/epoch (median) | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name in MODELS:
        secs = [e["seconds"] for e in results["models"][name]["epochs"]]
        lines.append(
            f"| {name} | {statistics.median(secs):.2f} | {min(secs):.2f} | {max(secs):.2f} |"
        )
    ratios = [
        a["seconds"] / b["seconds"]
        for a, b in zip(
            results["models"]["pyro-vae"]["epochs"],
            results["models"]["reference"]["epochs"],
            strict=True,
        )
    ]
    lines += [
        "",
        "Time per epoch, pyro-vae / reference, epoch by epoch (each pair ran back to back): "
        f"median {statistics.median(ratios):.2f}, range {min(ratios):.2f} to {max(ratios):.2f}.",
    ]
    diffs = ", ".join(f"{d:+.2f} after {e}" for e, d in c["nll_difference"].items())
    verdict = "PASS" if c["passed"] else "FAIL"
    lines += [
        "",
        f"NLL(pyro-vae) - NLL(reference), nats: {diffs}. Within {c['tolerance_nats']:g} nat: "
        f"**{verdict}**.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text(encoding="utf-8"))
        args.render.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
        return 0
    results = run(args, argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0 if results["check"]["passed"] or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
