"""to_flags, the one translator of the library's Python wording into flags, and where the
command line applies it: errors, notes, the help."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest

import pyro_vae.cli.train as train_module
from pyro_vae.cli.main import COMMANDS, _said, main
from pyro_vae.cli.messages import EVALUATE_ARGUMENTS, error_message, notices, to_flags
from pyro_vae.cli.parser import COMPONENT_FIELDS, build_parser
from pyro_vae.components import REGISTRIES
from pyro_vae.config import ConfigError
from pyro_vae.data import DataError
from pyro_vae.training.fit import TrainingError, TrainingInterrupted, TrainingNotice

# -- rule 1: a field -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TrainConfig.batch_size", "--batch-size"),
        ("VAEConfig.likelihood", "--likelihood"),
        ("VAEConfig.upper_latent_dims", "--upper-latent-dims"),
        ("EvaluateConfig.num_points", "--num-points"),
        ("SampleConfig.num", "--num"),
        ("pyro_vae.TrainConfig.lr", "--lr"),
        ("raise TrainConfig.max_skipped_steps.", "raise --max-skipped-steps."),
        ("(TrainConfig.out, TrainConfig.seed)", "(--out, --seed)"),
        ("TrainConfig.batch_size's value", "--batch-size's value"),
    ],
)
def test_a_field_becomes_its_flag(text: str, expected: str) -> None:
    assert to_flags(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "VAEConfig.data_shape",  # set from the data set: no flag
        "VAEConfig.num_classes",
        "TrainConfig.no_such_field",
        "RunConfig.train",
        "MyTrainConfig.batch_size",  # another name that ends alike
        "config.TrainConfig.batch_size",  # an attribute of something else
        "TrainConfig.",
        "TrainConfig",
        "batch_size must be a positive int",  # a bare field name is not a flag
        "train: batch_size must be a positive int",
    ],
)
def test_what_is_not_a_field_of_a_flag_is_left_alone(text: str) -> None:
    assert to_flags(text) == text


# -- rule 2: a call ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("VAEConfig(likelihood='normal')", "--likelihood normal"),
        ('VAEConfig(likelihood="normal")', "--likelihood normal"),
        ("TrainConfig(binarize='none')", "--binarize none"),
        ("VAEConfig(conditional=True)", "--conditional true"),
        ("VAEConfig(conditional=False)", "--conditional false"),
        ("TrainConfig(epochs=3)", "--epochs 3"),
        ("TrainConfig(lr=0.001)", "--lr 0.001"),
        ("TrainConfig(lr=1e-4)", "--lr 0.0001"),
        ("TrainConfig(seed=-1)", "--seed -1"),
        ("VAEConfig(hidden=(256, 128))", "--hidden 256,128"),
        ("VAEConfig(upper_latent_dims=())", "--upper-latent-dims ''"),
        ("TrainConfig(objective='iwae:k=5')", "--objective iwae:k=5"),
        ("VAEConfig(guide='iaf:hidden=(64)')", "--guide 'iaf:hidden=(64)'"),
        ("TrainConfig(out='my runs/x')", "--out 'my runs/x'"),
        ("TrainConfig(batch_size=N)", "--batch-size N"),
        ("TrainConfig(on_nan='skip', max_skipped_steps=5)", "--on-nan skip --max-skipped-steps 5"),
        ("EvaluateConfig(split='valid')", "--split valid"),
        ("SampleConfig(draw=True)", "--draw true"),
        ("pyro_vae.VAEConfig(prior='vamp')", "--prior vamp"),
        ("fit(..., resume=True)", "--resume"),
        ("fit()", "pyro-vae train"),
        ("fit(...)", "pyro-vae train"),
        ("fit(config)", "pyro-vae train"),
        ("fit(config, resume=True)", "--resume"),
        ("pyro_vae.fit(..., resume=True)", "--resume"),
        ("fit(resume_config('runs/x'), resume=True)", "--resume runs/x"),
        ("fit(resume_config(RUN_DIR), resume=True)", "--resume RUN_DIR"),
        ("fit(resume_config('r', epochs=200), resume=True)", "--resume r --epochs 200"),
        ("load_plugin('FILE')", "--plugin FILE"),
        ("load_plugin(FILE)", "--plugin FILE"),
        ("pyro_vae.load_plugin('parts.py')", "--plugin parts.py"),
        ("load(run_dir, plugins=['FILE'])", "--plugin FILE"),
        ("load('r', plugins=['a.py', '/x/b.py'])", "--plugin a.py --plugin /x/b.py"),
        ("pyro_vae.load(RUN_DIR, plugins=[FILE])", "--plugin FILE"),
        ("evaluate_run(num_points=5)", "--num-points 5"),
        ("evaluate_run(run_dir, gaps=N, mcmc=N)", "--gaps N --mcmc N"),
        ("evaluate_run(..., split='valid', dataset='mnist')", "--split valid --dataset mnist"),
        ("evaluate_run(psis_samples=100, mcmc_samples=50)", "--psis-samples 100 --mcmc-samples 50"),
        (
            "evaluate_run(num_samples=5000, seed=1, device='cpu')",
            "--num-samples 5000 --seed 1 --device cpu",
        ),
    ],
)
def test_a_call_becomes_its_flags(text: str, expected: str) -> None:
    assert to_flags(text) == expected
    assert to_flags(f"use {text}, then") == f"use {expected}, then"  # in a sentence
    assert to_flags(f"({text})") == f"({expected})"


@pytest.mark.parametrize(
    "text",
    [
        "VAEConfig(data_shape=(1, 8, 8))",  # not a flag
        "VAEConfig(nope=1)",
        "VAEConfig('normal')",  # positional
        "TrainConfig(device=None)",
        "TrainConfig(**settings)",
        "TrainConfig(lr=0.1 * scale)",
        "fit(..., resume=False)",
        "fit(config, write=False)",
        "fit(..., resume=True, progress=False)",
        "fit(other_function('r'), resume=True)",
        "load_plugin()",
        "load_plugin('a.py', 'b.py')",
        "load(run_dir)",
        "load(run_dir, map_location='cpu')",
        "load(run_dir, plugins=[])",
        "load(run_dir, plugins=files)",
        "evaluate_run(run_dir)",
        "evaluate_run(run_dir, strict=True)",
        "evaluate_run(run_dir, num_points=None)",
        "model.fit(..., resume=True)",  # someone else's fit
        "refit(..., resume=True)",
        "safe_load(run_dir, plugins=['a.py'])",
        "fit(..., resume=True",  # not closed
        "fit(..., resume=True]",
        "VAEConfig(likelihood='normal)",  # an open quote
        "fit(..., resume=Tru e)",  # not Python
        "fit",
        "",
    ],
)
def test_a_call_the_rules_do_not_cover_is_left_alone(text: str) -> None:
    assert to_flags(text) == text


def test_a_call_left_alone_is_searched_inside() -> None:
    assert to_flags("print(VAEConfig(prior='vamp'))") == "print(--prior vamp)"
    assert to_flags("fit(TrainConfig(epochs=3), write=False)") == "fit(--epochs 3, write=False)"


def test_prose_around_calls_survives() -> None:
    text = "it's fit(..., resume=True) that can't, and load_plugin('a.py') (or not)"
    assert to_flags(text) == "it's --resume that can't, and --plugin a.py (or not)"


# -- rule 3: an argument that opens the message ------------------------------------------------


@pytest.mark.parametrize("name", EVALUATE_ARGUMENTS)
def test_an_evaluate_argument_that_opens_the_message_becomes_its_flag(name: str) -> None:
    flag = "--" + name.replace("_", "-")
    assert (
        to_flags(f"{name} must be a positive int, got 0") == f"{flag} must be a positive int, got 0"
    )
    assert to_flags(f"{name}: bad") == f"{flag}: bad"
    assert to_flags(f"  {name} must") == f"  {flag} must"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "gaps and mcmc can use at most the 5 evaluated points",
            "--gaps and --mcmc can use at most the 5 evaluated points",
        ),
        ("num_points, gaps or mcmc must be", "--num-points, --gaps or --mcmc must be"),
        ("gaps, and mcmc", "--gaps, and --mcmc"),
        ("gaps and the rest", "--gaps and the rest"),
    ],
)
def test_several_opening_arguments(text: str, expected: str) -> None:
    assert to_flags(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "the num_points must be in 1..5",  # not the opening
        "x. num_points must be",
        "num_pointsx must",
        "num_points_total must",
        "num_points(5) is",
        "num_points=5 is",
        "split.x is",
        "dataset['x'] is",
        "datasets are",
        "Dataset 'mnist' is incomplete",  # the word, capitalized
        "splits must",
        "devices",
        "latent_dim must be a positive int",  # not an argument of evaluate_run
        "--num-points must be",  # already a flag
    ],
)
def test_what_is_not_an_opening_argument_is_left_alone(text: str) -> None:
    assert to_flags(text) == text


# -- the library's rewordings (CONVENTIONS.md), as the CLI tests expect them -------------------

REWORDED = [
    (
        "TrainConfig.batch_size is the global batch and must be at least the number of "
        "processes (2), got 1",
        "--batch-size is the global batch and must be at least the number of processes (2), got 1",
    ),
    (
        "TrainConfig.device must be auto, cpu, cuda or cuda:N (N the GPU's index), got 'tpu'. "
        "Pass one of those, e.g. TrainConfig(device='cpu').",
        "--device must be auto, cpu, cuda or cuda:N (N the GPU's index), got 'tpu'. Pass one "
        "of those, e.g. --device cpu.",
    ),
    (
        "device must be auto, cpu, cuda or cuda:N (N the GPU's index), got 'cuda0'.",
        "--device must be auto, cpu, cuda or cuda:N (N the GPU's index), got 'cuda0'.",
    ),
    (
        "TrainConfig(device='cuda:1') was asked for, but torch sees no CUDA device",
        "--device cuda:1 was asked for, but torch sees no CUDA device",
    ),
    (
        "TrainConfig(binarize='dynamic') needs values in [0, 1] (pixel intensities), but the "
        "train split of 'x' ranges over [-1, 2]. Rescale the data, or use "
        "TrainConfig(binarize='none') with a likelihood for continuous data.",
        "--binarize dynamic needs values in [0, 1] (pixel intensities), but the train split "
        "of 'x' ranges over [-1, 2]. Rescale the data, or use --binarize none with a "
        "likelihood for continuous data.",
    ),
    (
        "the train split of 'tiny' has 3 rows, fewer than TrainConfig.batch_size 100: each "
        "epoch is one step on all 3 rows.",
        "the train split of 'tiny' has 3 rows, fewer than --batch-size 100: each epoch is one "
        "step on all 3 rows.",
    ),
    (
        "a conditional VAE (VAEConfig(conditional=True)) needs class labels, but data set 'x' "
        "has none. Use a data set with labels, or train with VAEConfig(conditional=False).",
        "a conditional VAE (--conditional true) needs class labels, but data set 'x' has "
        "none. Use a data set with labels, or train with --conditional false.",
    ),
    (
        "'runs/x' already holds a run. Pass fit(..., resume=True) to continue it, or choose "
        "another TrainConfig.out; nothing was changed.",
        "'runs/x' already holds a run. Pass --resume to continue it, or choose another --out; "
        "nothing was changed.",
    ),
    (
        "TrainConfig.out 'r' holds other files (a.txt) and is not a pyro-vae run (it has no "
        "config.json). A new run needs an empty or new folder: choose another TrainConfig.out "
        "(to continue a run, pass fit(resume_config(RUN_DIR), resume=True)); nothing was "
        "changed.",
        "--out 'r' holds other files (a.txt) and is not a pyro-vae run (it has no "
        "config.json). A new run needs an empty or new folder: choose another --out (to "
        "continue a run, pass --resume RUN_DIR); nothing was changed.",
    ),
    (
        "TrainConfig.out 'r' is a file, but a run directory is expected. Choose another "
        "TrainConfig.out.",
        "--out 'r' is a file, but a run directory is expected. Choose another --out.",
    ),
    (
        "fit(..., resume=True): 'r' is not a pyro-vae run directory (it needs config.json and "
        "checkpoint.safetensors). Start a new run without fit(..., resume=True).",
        "--resume: 'r' is not a pyro-vae run directory (it needs config.json and "
        "checkpoint.safetensors). Start a new run without --resume.",
    ),
    (
        "training stopped: 5 steps were skipped for a non-finite loss or gradient, more than "
        "TrainConfig.max_skipped_steps 3. Raise TrainConfig.max_skipped_steps to allow more "
        "(fit(..., resume=True) may change it), lower TrainConfig.lr, or check the data.",
        "training stopped: 5 steps were skipped for a non-finite loss or gradient, more than "
        "--max-skipped-steps 3. Raise --max-skipped-steps to allow more (--resume may change "
        "it), lower --lr, or check the data.",
    ),
    (
        "Lower TrainConfig.lr, check the data and the model's components, or pass "
        "TrainConfig(on_nan='skip') to skip such steps (at most "
        "TrainConfig.max_skipped_steps of them).",
        "Lower --lr, check the data and the model's components, or pass --on-nan skip to skip "
        "such steps (at most --max-skipped-steps of them).",
    ),
    (
        "binary data (0 or 1) is expected: use TrainConfig(binarize='dynamic') to draw "
        "x ~ Bernoulli(pixel) every epoch, or a likelihood for continuous data (e.g. "
        "VAEConfig(likelihood='normal')).",
        "binary data (0 or 1) is expected: use --binarize dynamic to draw x ~ Bernoulli(pixel) "
        "every epoch, or a likelihood for continuous data (e.g. --likelihood normal).",
    ),
    (
        "use VAEConfig(likelihood='continuous-bernoulli') or beta",
        "use --likelihood continuous-bernoulli or beta",
    ),
    (
        "config.json needs the prior 'p' from file '/tmp/x/p.py', which this process has not "
        "registered. Call load_plugin('/tmp/x/p.py') first (it runs its code), or "
        "load(run_dir, plugins=['/tmp/x/p.py']).",
        "config.json needs the prior 'p' from file '/tmp/x/p.py', which this process has not "
        "registered. Call --plugin /tmp/x/p.py first (it runs its code), or --plugin "
        "/tmp/x/p.py.",
    ),
    (
        "unknown prior 'nope'; valid prior names are: flow, normal. Your own prior? Register "
        "its class and load_plugin('FILE').",
        "unknown prior 'nope'; valid prior names are: flow, normal. Your own prior? Register "
        "its class and --plugin FILE.",
    ),
    (
        "psis_samples must be at least 100, got 5: PSIS fits a Pareto tail",
        "--psis-samples must be at least 100, got 5: PSIS fits a Pareto tail",
    ),
    (
        "gaps and mcmc can use at most the 5 evaluated points",
        "--gaps and --mcmc can use at most the 5 evaluated points",
    ),
    (
        "num_points must be in 1..360 for this split, got 0",
        "--num-points must be in 1..360 for this split, got 0",
    ),
    ("num_samples must be a positive int, got 0", "--num-samples must be a positive int, got 0"),
    (
        "data set 'mnist' has items of shape (1, 28, 28), but the model in 'r' was trained on "
        "items of shape (1, 8, 8) (data set 'digits'). Evaluate it on data of that shape, e.g. "
        "evaluate_run(dataset='digits').",
        "data set 'mnist' has items of shape (1, 28, 28), but the model in 'r' was trained on "
        "items of shape (1, 8, 8) (data set 'digits'). Evaluate it on data of that shape, e.g. "
        "--dataset digits.",
    ),
    (
        "'out' holds a run made with other settings (epochs). Use the same settings to "
        "continue the comparison, or another TrainConfig.out for a new one.",
        "'out' holds a run made with other settings (epochs). Use the same settings to "
        "continue the comparison, or another --out for a new one.",
    ),
    (
        "alpha=1 is the ELBO (the Renyi bound's limit as alpha -> 1): use "
        "TrainConfig(objective='elbo')",
        "alpha=1 is the ELBO (the Renyi bound's limit as alpha -> 1): use --objective elbo",
    ),
    (
        "A Delta guide (VAEConfig(guide='delta')) trains a regularized autoencoder",
        "A Delta guide (--guide delta) trains a regularized autoencoder",
    ),
    ("or use VAEConfig(network='mlp').", "or use --network mlp."),
    (
        "VAEConfig(prior='vamp'), or another prior with VAEConfig(guide='delta').",
        "--prior vamp, or another prior with --guide delta.",
    ),
    (
        "the run directory is intact: run the same torchrun command with "
        "fit(..., resume=True) to continue.",
        "the run directory is intact: run the same torchrun command with --resume to continue.",
    ),
    # as written on the training and data branches
    (
        "leave PYRO_VAE_DATA unset and pass no root, e.g. env -u PYRO_VAE_DATA fit() with "
        "TrainConfig(dataset='mnist').",
        "leave PYRO_VAE_DATA unset and pass no root, e.g. env -u PYRO_VAE_DATA pyro-vae train "
        "--dataset mnist.",
    ),
    (
        "fit(...) with VAEConfig(likelihood='beta'), TrainConfig(binarize='none')",
        "pyro-vae train --likelihood beta, --binarize none",
    ),
    ("fit() with TrainConfig(data_shape=(1,))", "pyro-vae train with TrainConfig(data_shape=(1,))"),
    (
        "config.json has no train settings. Start a new run with fit() and another "
        "TrainConfig.out.",
        "config.json has no train settings. Start a new run with pyro-vae train and another --out.",
    ),
    (
        "the train split of 'tiny' has 3 rows, fewer than TrainConfig(batch_size=100): each "
        "epoch is one step on all 3 rows.",
        "the train split of 'tiny' has 3 rows, fewer than --batch-size 100: each epoch is one "
        "step on all 3 rows.",
    ),
    (
        "training stopped: 5 steps were skipped for a non-finite loss or gradient, more than "
        "TrainConfig(max_skipped_steps=3) allows; the first of this epoch was at epoch 2.",
        "training stopped: 5 steps were skipped for a non-finite loss or gradient, more than "
        "--max-skipped-steps 3 allows; the first of this epoch was at epoch 2.",
    ),
    (
        "'r' already holds a run. Continue it with fit(..., resume=True), or choose another "
        "TrainConfig.out; nothing was changed.",
        "'r' already holds a run. Continue it with --resume, or choose another --out; nothing "
        "was changed.",
    ),
    (
        "start the same processes again with fit(..., resume=True) to continue.",
        "start the same processes again with --resume to continue.",
    ),
    (
        "(save it as your own .npy and pass TrainConfig(dataset='FILE.npy')), or use "
        "VAEConfig(likelihood='continuous-bernoulli'), which accepts [0, 1].",
        "(save it as your own .npy and pass --dataset FILE.npy), or use --likelihood "
        "continuous-bernoulli, which accepts [0, 1].",
    ),
    (
        "Use VAEConfig(network='mlp'), or fewer layers (VAEConfig(network='conv:layers=1')).",
        "Use --network mlp, or fewer layers (--network conv:layers=1).",
    ),
    (
        "Load the plugin first: load_plugin('/t/a.py') load_plugin('/t/b c.py'), or "
        "load(run_dir, plugins=['/t/a.py', '/t/b c.py']) (importing a plugin runs its code).",
        "Load the plugin first: --plugin /t/a.py --plugin '/t/b c.py', or --plugin /t/a.py "
        "--plugin '/t/b c.py' (importing a plugin runs its code).",
    ),
    (
        "register(\"name\") decorator in a Python file and load it with load_plugin('FILE') "
        "(or import its module) before building the config.",
        'register("name") decorator in a Python file and load it with --plugin FILE (or '
        "import its module) before building the config.",
    ),
    (
        "data set 'mnist' has items of shape (1, 28, 28); evaluate it on data of that shape, "
        "e.g. evaluate_run(..., dataset='digits').",
        "data set 'mnist' has items of shape (1, 28, 28); evaluate it on data of that shape, "
        "e.g. --dataset digits.",
    ),
    (
        "choose the data with [train] dataset (or TrainConfig.dataset).",
        "choose the data with [train] dataset (or --dataset).",
    ),
]


@pytest.mark.parametrize(("library", "cli"), REWORDED)
def test_the_library_rewordings_read_as_the_flags_the_cli_user_typed(
    library: str, cli: str
) -> None:
    assert to_flags(library) == cli
    assert to_flags(cli) == cli  # a message already in flags is left as it is


def test_text_without_python_wording_is_unchanged() -> None:
    for text in ("", "plain words", "--latent-dim 0: latent_dim must be a positive int, got 0."):
        assert to_flags(text) == text


# -- where the CLI applies it ------------------------------------------------------------------


def test_error_message_is_in_flags() -> None:
    said = error_message(DataError("use TrainConfig(binarize='none')"))
    assert said == "use --binarize none\n(run with --debug for the traceback)"
    said = error_message(ValueError("TrainConfig.batch_size is the global batch"))
    assert said.startswith("ValueError: --batch-size is the global batch")


def test_notes_are_in_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with notices():
        warnings.warn(TrainingNotice("fewer than TrainConfig.batch_size 100"), stacklevel=1)
    assert capsys.readouterr().err == "pyro-vae: note: fewer than --batch-size 100\n"


def test_an_interrupted_run_says_the_command_to_continue() -> None:
    e = TrainingInterrupted(
        "interrupted after epoch 3; 'r/checkpoint.safetensors' holds that exact state. "
        "Continue with: fit(resume_config('r'), resume=True)"
    )
    assert _said(e).endswith("Continue with: pyro-vae train --resume r")
    e = TrainingInterrupted(
        "interrupted after epoch 3; 'r/checkpoint.safetensors' holds that exact state. "
        "Continue with fit(resume_config('r'), resume=True)."
    )
    assert _said(e).endswith("Continue with pyro-vae train --resume r.")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            TrainingError("TrainConfig.out 'x' is a file. Choose another TrainConfig.out."),
            "--out 'x' is a file. Choose another --out.",
        ),
        (
            ValueError("TrainConfig.batch_size is the global batch"),
            "ValueError: --batch-size is the global batch",
        ),
        (
            ConfigError("VAEConfig(conditional=True) needs labels"),
            "--conditional true needs labels",
        ),
    ],
)
def test_main_prints_library_errors_in_flags(
    error: Exception,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(train_module, "fit", fail)
    assert main(["train", "--out", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyro-vae: error: {expected}\n")


def test_the_field_check_still_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--out", str(tmp_path / "r"), "--latent-dim", "0"]) == 2
    err = capsys.readouterr().err
    assert (
        "--latent-dim 0: latent_dim must be a positive int, got 0. Pass --latent-dim a valid" in err
    )
    assert not (tmp_path / "r").exists()


# -- the help says what each flag takes ------------------------------------------------------------


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices[command].format_help().split())


@pytest.mark.parametrize("command", ["train", "compare"])
def test_the_help_says_what_each_flag_takes(command: str) -> None:
    text = _help(command)
    assert "--conditional {true,false}" in text and "--replay {true,false}" in text
    assert "(default: false)" in text and "(default: )" not in text
    assert "--upper-latent-dims N,N,... sizes of latent layers" in text
    assert "(default: none, written '')" in text
    assert "--binarize {auto,none,dynamic}" in text and "--on-nan {stop,skip}" in text
    for field, key in COMPONENT_FIELDS.items():
        names = ", ".join(REGISTRIES[key].names())
        assert f"--{field} SPEC" in text
        assert f"NAME one of {names} (pyro-vae components lists them with their parameters)" in text


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["evaluate", "RUN"], "eval.json holds the figures finished so far"),
        (["sample", "RUN"], "interrupted; nothing was changed."),
        (["train", "--out", "r"], "Continue with: pyro-vae train --resume r"),
    ],
)
def test_ctrl_c_says_what_is_kept(
    argv: list[str], said: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def stop(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(COMMANDS, argv[0], stop)
    assert main(argv) == 130
    assert said in capsys.readouterr().err
