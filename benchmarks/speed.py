"""Training and evaluation throughput: pyro-vae against the hand-written PyTorch reference.

Usage (from the repository root)::

    PYRO_VAE_DATA=../shared/data python -m benchmarks.speed \\
        --out benchmarks/results/speed.json          # CPU, 2 threads
    PYRO_VAE_DATA=../shared/data python -m benchmarks.speed --device cuda \\
        --out benchmarks/results/speed-cuda.json     # where a GPU is present

pyro-vae is timed on its real training path, ``pyro_vae.training.loop.Loop.train_epoch``: the
model and guide as Pyro programs, the sync-free ``Trace_ELBO`` estimator recorded once per batch
shape and replayed (:mod:`pyro_vae.training.replay`), the device-side step guard, fused Adam and
device-resident batches; the column ``Pyro program every step`` is the same loop with
``replay=False``. The reference is ``benchmarks.reference``: the same
networks and initial weights, trained by a hand-written loss with ``torch.optim.Adam`` at
its defaults (what a PyTorch user writes). Its row ``reference (fused Adam)`` shows how much
of any difference the optimizer accounts for.

Every configuration times *paired step blocks*: a block of ``--block-rows`` rows (one
epoch of them) of each contender in turn, in an order rotated each round, ``--pairs``
rounds (at least 5) after one warm-up round. Each round's ratio is the reference's block
time over pyro-vae's, measured seconds apart under the same machine load; the verdict is
the median ratio, reported with its spread (min, quartiles, max), so a neighbour's job
that slows one block slows its pair too and moves the verdict little.

Peak resident memory is measured in separate processes (``ru_maxrss``), one epoch of MNIST
each. The conv architecture (the parts issue's ``conv`` pair) is timed on a tenth of
``--block-rows``. ``--smoke`` is a seconds-long run for CI with no claims.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from benchmarks.reference import ConvReferenceVAE, ReferenceVAE, train_epoch
from pyro_vae import VAE, VAEConfig, load_dataset, log_likelihood
from pyro_vae.config import TrainConfig
from pyro_vae.training.guard import fused_adam
from pyro_vae.training.loop import Loop

ROOT = Path(__file__).resolve().parents[1]  # the memory probes run as python -m benchmarks.speed
GRAPH = "pyro-vae (CUDA graph)"  # the contender with TrainConfig(cuda_graphs=True), CUDA only

ARCHITECTURES = {  # name -> (network, hidden, activation, latent, share of --rows timed)
    "200-200-50 tanh (IWAE)": ("mlp", (200, 200), "tanh", 50, 1.0),
    "400-50": ("mlp", (400,), "tanh", 50, 1.0),
    "conv 32-64, fc 256, 50": ("conv", (256,), "relu", 50, 0.1),  # the parts issue's conv pair
}


def _models(arch: str, device: torch.device, seed: int) -> tuple[VAE, ReferenceVAE]:
    network, hidden, act, latent, _ = ARCHITECTURES[arch]
    pyro.set_rng_seed(seed)
    config = VAEConfig(
        data_shape=(1, 28, 28), network=network, latent_dim=latent, hidden=hidden, activation=act
    )
    vae = VAE(config).to(device)
    reference = ConvReferenceVAE if network == "conv" else ReferenceVAE
    return vae, reference.from_pyro_vae(vae).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_row(
    x: torch.Tensor,
    arch: str,
    batch: int,
    pairs: int,
    device: torch.device,
    eager_column: bool = True,
    block_rows: int = 4096,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Paired step blocks: each round times one block of steps of every contender in turn.

    A block is one epoch of ``block_rows`` rows (at least one batch; ``block_rows / batch``
    steps) through each contender's real epoch function. Round ``r`` runs the contenders in
    an order rotated by ``r``, so none always runs first or after the same neighbour. Each
    round gives a *pair* ratio per contender, the reference's block time over its block
    time (> 1: faster than the reference), measured seconds apart under the same machine
    load. The verdict is the median of the ``pairs`` rounds' ratios (the first, warm-up
    round is not counted), reported with its spread (min, quartiles, max).
    """
    share = ARCHITECTURES[arch][4]
    x = x[: max(batch, int(min(block_rows, x.shape[0]) * share))]
    loops = {}
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("pyro-vae", {}),
        ("pyro-vae (Pyro program every step)", {"replay": False}),
    ][: 2 if eager_column else 1]
    if device.type == "cuda":  # the whole step as one CUDA graph (pyro_vae.training.cudagraph)
        kinds.append((GRAPH, {"cuda_graphs": True}))
    for name, extra in kinds:
        vae, _ = _models(arch, device, seed=0)
        tc = TrainConfig(batch_size=batch, binarize="none", epochs=10**6, lr=1e-3, **extra)
        opt = fused_adam(list(vae.parameters()), tc.lr)
        loops[name] = Loop(vae, opt, torch.Generator(device=device).manual_seed(0), tc, x, False)
    _, ref = _models(arch, device, seed=0)
    _, ref_fused = _models(arch, device, seed=0)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    fused_opt = fused_adam(list(ref_fused.parameters()), 1e-3)
    order = torch.Generator(device=device).manual_seed(0)
    contenders: dict[str, Callable[[int], Any]] = {
        **{name: loop.train_epoch for name, loop in loops.items()},
        "reference": lambda e: train_epoch(ref, ref_opt, x, batch, order),
        "reference (fused Adam)": lambda e: train_epoch(ref_fused, fused_opt, x, batch, order),
    }
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for block in range(pairs + 1):  # block 0 warms up (records the replay) and is not counted
        for name in names[block % len(names) :] + names[: block % len(names)]:
            _sync(device)
            start = clock()
            contenders[name](block + 1)
            _sync(device)
            if block > 0:
                seconds[name].append(clock() - start)
    ratios = {
        name: [r / t for r, t in zip(seconds["reference"], seconds[name], strict=True)]
        for name in names
        if name != "reference"
    }
    med = {k: x.shape[0] / statistics.median(v) for k, v in seconds.items()}
    replayed = loops["pyro-vae"].loss_fn
    graphs = loops[GRAPH].graphs if GRAPH in loops else None
    graph_row: dict[str, Any] = {}
    if graphs is not None:  # whether the graph ran (or why not), and its verdict
        graph_row["cuda_graph"] = graphs.report()
        graph_row["ratio_vs_reference_cuda_graph"] = statistics.median(ratios[GRAPH])
        graph_row["cuda_graph_spread"] = spread(ratios[GRAPH])
    return {
        "architecture": arch,
        "batch": batch,
        "rows": x.shape[0],
        "steps_per_block": loops["pyro-vae"].steps_per_epoch,
        "images_per_s": med,
        "ratio_vs_reference": statistics.median(ratios["pyro-vae"]),
        "ratio_spread": spread(ratios["pyro-vae"]),
        "pair_ratios": {k: [round(r, 4) for r in v] for k, v in ratios.items()},
        "ratio_vs_reference_fused": statistics.median(
            [
                f / t
                for f, t in zip(seconds["reference (fused Adam)"], seconds["pyro-vae"], strict=True)
            ]
        ),
        "replayed": bool(getattr(replayed, "recorded", False)),
        "pairs": pairs,
        **graph_row,
    }


def spread(values: list[float]) -> dict[str, float]:
    """Min, quartiles and max of ``values`` (the quartiles equal the median below 2 values)."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"min": min(values), "q1": q[0], "median": q[1], "q3": q[2], "max": max(values)}


def iw_row(x: torch.Tensor, k: int, device: torch.device) -> dict[str, Any]:
    vae, ref = _models("200-200-50 tanh (IWAE)", device, seed=0)
    rates: dict[str, list[float]] = {"pyro-vae": [], "reference": []}
    for _ in range(2):
        for name, fn in (
            ("pyro-vae", lambda: log_likelihood(vae.model, vae.guide, x, num_samples=k)),
            ("reference", lambda: ref.log_likelihood(x, k)),
        ):
            _sync(device)
            start = time.perf_counter()
            with torch.no_grad():
                fn()
            _sync(device)
            rates[name].append(x.shape[0] / (time.perf_counter() - start))
    med = {n: statistics.median(v) for n, v in rates.items()}
    return {
        "k": k,
        "points": x.shape[0],
        "images_per_s": med,
        "ratio_vs_reference": med["pyro-vae"] / med["reference"],
    }


def memory_probe(which: str, device: str, path: str) -> None:
    """Child process: one epoch (batch 128, 400-50) on the rows saved at ``path``.

    Prints two figures in MiB: the peak resident memory (``ru_maxrss``) before training and
    after it; equal figures mean training stayed below the peak of loading. The rows come
    from a ``.npy`` of bytes, so loading them costs far less than training's peak; reading
    MNIST's gzip files here would set a peak of their own, the same for both contenders.
    """
    dev = torch.device(device)
    x = torch.from_numpy(np.load(path)).to(dev, torch.float32)  # (N, 1, 28, 28) in {0, 1}
    vae, ref = _models("400-50", dev, seed=0)
    before = _peak_mib()
    if which == "pyro-vae":
        tc = TrainConfig(batch_size=128, binarize="none", epochs=1)
        opt = fused_adam(list(vae.parameters()), tc.lr)
        Loop(vae, opt, torch.Generator(device=dev).manual_seed(0), tc, x, False).train_epoch(1)
    else:
        opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-3)
        train_epoch(ref, opt_ref, x, 128, torch.Generator(device=dev).manual_seed(0))
    print(before, _peak_mib())


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_rows(device: str, rows: int) -> dict[str, float]:
    """Peak and training-added resident memory of each contender, in its own process."""
    x = load_dataset("mnist", progress=False).train[:rows]
    x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "rows.npy")
        np.save(path, x.numpy())
        for which in ("reference", "pyro-vae"):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.speed",
                "--memory-probe",
                which,
                "--device",
                device,
            ]
            result = subprocess.run(
                [*cmd, "--rows-file", path], capture_output=True, text=True, check=True, cwd=ROOT
            )
            before, peak = map(float, result.stdout.strip().splitlines()[-1].split())
            out[which], out[f"{which} before training"] = peak, before
    out["ratio"] = out["pyro-vae"] / out["reference"]
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Date: {result['date']}  ",
        f"Load average at start/end: {result['load_start']} / {result['load_end']}  ",
        f"Clock: {result.get('clock', 'wall')} time",
        "",
        "Ratios are medians over paired step blocks (each block of pyro-vae timed beside one "
        "of the reference, seconds apart); [min, q1-q3, max] is their spread.",
        "",
        "| architecture | batch | steps/block | pairs | pyro-vae img/s | reference img/s | "
        "**ratio** | spread | Pyro program every step img/s | ratio | "
        "reference (fused Adam) img/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["training"]:
        ips, sp = r["images_per_s"], r["ratio_spread"]
        eager = ips.get("pyro-vae (Pyro program every step)", math.nan)
        eager_pairs = r["pair_ratios"].get("pyro-vae (Pyro program every step)")
        eager_ratio = statistics.median(eager_pairs) if eager_pairs else math.nan
        lines.append(
            f"| {r['architecture']} | {r['batch']} | {r['steps_per_block']} | {r['pairs']} | "
            f"{ips['pyro-vae']:.0f} | {ips['reference']:.0f} | "
            f"**{r['ratio_vs_reference']:.2f}** | [{sp['min']:.2f}, {sp['q1']:.2f}-"
            f"{sp['q3']:.2f}, {sp['max']:.2f}] | {eager:.0f} | {eager_ratio:.2f} | "
            f"{ips['reference (fused Adam)']:.0f} | {r['ratio_vs_reference_fused']:.2f} |"
        )
    graphs = [r for r in result["training"] if "cuda_graph" in r]
    if graphs:
        lines += ["", f"{GRAPH}: TrainConfig(cuda_graphs=True), the step replayed as one graph", ""]
        lines += ["| architecture | batch | img/s | **ratio** | spread | graph |", "|" + "---|" * 6]
    for r in graphs:
        sp = r["cuda_graph_spread"]
        lines.append(
            f"| {r['architecture']} | {r['batch']} | {r['images_per_s'][GRAPH]:.0f} | "
            f"**{r['ratio_vs_reference_cuda_graph']:.2f}** | [{sp['min']:.2f}, {sp['q1']:.2f}-"
            f"{sp['q3']:.2f}, {sp['max']:.2f}] | {r['cuda_graph']} |"
        )
    iw = result["iw"]
    lines += [
        "",
        f"IW evaluation, k = {iw['k']}, {iw['points']} points: pyro-vae "
        f"{iw['images_per_s']['pyro-vae']:.2f} img/s, reference "
        f"{iw['images_per_s']['reference']:.2f} img/s, ratio {iw['ratio_vs_reference']:.2f}",
    ]
    if "memory_mib" in result:
        m = result["memory_mib"]
        lines += [
            "",
            f"Peak resident memory, one epoch ({result['memory_rows']} rows, batch 128, "
            f"400-50): pyro-vae {m['pyro-vae']:.0f} MiB, reference {m['reference']:.0f} MiB, "
            f"ratio {m['ratio']:.2f}; the peak before training (rows loaded, models built): "
            f"pyro-vae {m['pyro-vae before training']:.0f} MiB, reference "
            f"{m['reference before training']:.0f} MiB",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__.splitlines()[0]
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--rows",
        type=int,
        default=10240,
        help="MNIST rows loaded (a block uses --block-rows of them)",
    )
    p.add_argument(
        "--pairs", "--repeats", type=int, default=9, help="timed rounds of paired blocks (>= 5)"
    )
    p.add_argument("--block-rows", type=int, default=4096, help="rows per timed step block")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (the verdict); cpu: this process's CPU time, which a busy "
        "machine inflates far less (a CPU-only cross-check; use with --threads 1)",
    )
    p.add_argument("--batches", default="32,128,512")
    p.add_argument("--architectures", default=";".join(ARCHITECTURES), help="; separated names")
    p.add_argument(
        "--no-eager-column",
        action="store_true",
        help="time only the default path and the references (the eager contender's epochs, "
        "interleaved, were seen to slow the others' by 20-40%%)",
    )
    p.add_argument("--iw-k", type=int, default=5000)
    p.add_argument("--iw-points", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.json"))
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--memory-probe", choices=("pyro-vae", "reference"))
    p.add_argument("--rows-file", help="(internal) the .npy of rows a memory probe trains on")
    args = p.parse_args()
    if not args.smoke and args.pairs < 5:
        p.error("--pairs must be at least 5 (the verdict is a median of pairs)")
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args.memory_probe, args.device, args.rows_file)
        return
    if args.smoke:
        args.rows, args.pairs, args.batches, args.iw_k, args.iw_points = 256, 1, "32", 20, 4
        args.block_rows = 256
    device = torch.device(args.device)
    data = load_dataset("mnist", progress=False)
    x = torch.bernoulli(data.train[: args.rows], generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    load_start = os.getloadavg()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    training = [
        training_row(
            x, arch, int(b), args.pairs, device, not args.no_eager_column, args.block_rows, clock
        )
        for arch in args.architectures.split(";")
        for b in args.batches.split(",")
    ]
    iw = iw_row(x[: args.iw_points], args.iw_k, device)
    result: dict[str, Any] = {
        "benchmark": "speed",
        "command": " ".join(["python -m benchmarks.speed", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}, pyro {pyro.__version__}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "date": time.strftime("%Y-%m-%d"),
        "device": str(device),
        "clock": args.clock,
        "training": training,
        "iw": iw,
        "load_start": [round(v, 2) for v in load_start],
        "load_end": [round(v, 2) for v in os.getloadavg()],
    }
    if not args.smoke and not args.no_memory:
        result["memory_mib"] = memory_rows(args.device, 60000)
        result["memory_rows"] = 60000
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
