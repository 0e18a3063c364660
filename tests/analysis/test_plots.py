"""Tests for pyro_vae.analysis.plots (and the drawing helpers under it): every function writes a
readable PNG of the expected proportions, and says what its rows and curves are."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
import torch

from pyro_vae.analysis import drawing, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPES = [(1, 28, 28), (1, 8, 8), (64,), (5,), (28, 28), (3, 16, 16)]
FULL_HISTORY_KEYS = [
    f"{split}_{key}" for split in ("train", "valid") for key in ("elbo", "reconstruction", "kl")
]


@pytest.fixture(autouse=True)
def no_leftover_tmp(tmp_path: Path) -> Iterator[None]:
    """Every test ends with no temporary files anywhere under its folder."""
    yield
    assert list(tmp_path.rglob("*.tmp")) == []


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) in pixels of the PNG at ``path``, after checking its signature."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3
    return pixels.shape[0], pixels.shape[1]


def ratio(path: Path) -> float:
    """Height over width of the PNG at ``path``."""
    height, width = png_size(path)
    return height / width


def rand(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def history(epochs: int, keys: list[str] = FULL_HISTORY_KEYS) -> list[dict[str, float]]:
    return [
        {"epoch": e, **{k: -100.0 + 10 * e + i for i, k in enumerate(keys)}}
        for e in range(1, epochs + 1)
    ]


# ----------------------------------------------------------------------------- image_grid


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_image_grid_writes_png(tmp_path: Path, shape: tuple[int, ...], as_tensor: bool) -> None:
    images = rand(13, shape)
    arg = torch.from_numpy(images) if as_tensor else images
    out = plots.image_grid(arg, tmp_path / "grid.png", ncols=5, title="a grid")
    assert out == tmp_path / "grid.png"
    png_size(out)


@pytest.mark.parametrize(("shape", "side"), [((1, 28, 28), 28), ((1, 8, 8), 8), ((64,), 8)])
def test_image_grid_proportions(tmp_path: Path, shape: tuple[int, ...], side: int) -> None:
    # 20 square images in rows of 10, no title: about twice as wide per row as tall per row.
    out = plots.image_grid(rand(20, shape), tmp_path / "grid.png", ncols=10)
    assert ratio(out) == pytest.approx(2 / 10, rel=0.15)
    tall = plots.image_grid(rand(20, shape), tmp_path / "tall.png", ncols=2)
    assert ratio(tall) == pytest.approx(10 / 2, rel=0.15)


def test_image_grid_few_images_use_few_columns(tmp_path: Path) -> None:
    out = plots.image_grid(rand(3, (1, 28, 28)), tmp_path / "grid.png", ncols=10)
    three = plots.image_grid(rand(3, (1, 28, 28)), tmp_path / "three.png", ncols=3)
    assert png_size(out) == png_size(three)
    assert ratio(out) == pytest.approx(1 / 3, rel=0.25)  # one row of three, with margins


def test_image_grid_title_adds_height(tmp_path: Path) -> None:
    plain = png_size(plots.image_grid(rand(10, (1, 8, 8)), tmp_path / "a.png"))
    titled = png_size(plots.image_grid(rand(10, (1, 8, 8)), tmp_path / "b.png", title="t"))
    assert titled[1] == plain[1]
    assert titled[0] > plain[0]


def test_image_grid_line_plots_for_non_square_vectors(tmp_path: Path) -> None:
    out = plots.image_grid(rand(20, (5,)), tmp_path / "lines.png", ncols=10)
    assert 0.1 < ratio(out) < 0.4  # two rows of ten small panels


def test_image_grid_accepts_awkward_inputs(tmp_path: Path) -> None:
    grad = torch.rand(4, 1, 8, 8, requires_grad=True) * 3 - 1  # out of [0, 1], needs grad
    png_size(plots.image_grid(grad, tmp_path / "grad.png"))
    half = torch.rand(4, 1, 8, 8, dtype=torch.float16)
    png_size(plots.image_grid(half, tmp_path / "half.png"))
    png_size(plots.image_grid(rand(1, (1, 8, 8)), tmp_path / "one.png", title="one image"))
    png_size(plots.image_grid(rand(2, (1,)), tmp_path / "d1.png"))


def test_image_grid_creates_folder_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "grid.png"
    plots.image_grid(rand(4, (1, 8, 8)), path)
    first = path.read_bytes()
    plots.image_grid(rand(4, (1, 8, 8), seed=1), path)
    assert path.read_bytes() != first
    png_size(path)


@pytest.mark.parametrize(
    "shape",
    [(4,), (0, 1, 8, 8), (4, 0), (4, 1, 0, 8), (4, 2, 3, 0, 4)],
)
def test_image_grid_bad_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"images must have shape .*got shape") as err:
        plots.image_grid(np.zeros(shape), tmp_path / "grid.png")
    assert str(shape) in str(err.value)
    assert list(tmp_path.iterdir()) == []


OTHER_SHAPES = [(2, 8, 8), (4, 4, 4, 4, 4), (5, 3, 3), (1, 2, 3, 4)]


@pytest.mark.parametrize("shape", OTHER_SHAPES)
def test_items_that_are_not_images_are_drawn_as_blocks_of_slices(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    """Any channel count, and any number of item axes: each item is its grey 2-D slices over
    the last two axes, in C order, in rows of ceil(sqrt(S)), one NaN pixel between them."""
    x = rand(6, shape)
    tiles = drawing.to_tiles(x, "images")
    stack = x.reshape(6, -1, *shape[-2:])
    count, (h, w) = stack.shape[1], shape[-2:]
    cols = math.ceil(math.sqrt(count))
    assert tiles.shape == (6, math.ceil(count / cols) * (h + 1) - 1, cols * (w + 1) - 1)
    for s in range(count):
        y, x0 = (s // cols) * (h + 1), (s % cols) * (w + 1)
        assert np.array_equal(tiles[:, y : y + h, x0 : x0 + w], stack[:, s])
    assert np.isnan(tiles).sum() == 6 * (tiles[0].size - count * h * w)
    for write in (plots.image_grid, plots.samples):
        png_size(write(x, tmp_path / f"{write.__name__}.png"))
    png_size(plots.reconstructions(x, x.reshape(6, -1), tmp_path / "recon.png"))


def _blue_pixels(path: Path) -> int:
    pixels = matplotlib.image.imread(path)[..., :3]
    return int((np.abs(pixels - matplotlib.colors.to_rgb(drawing.SLICE_LINE)) < 0.02).all(-1).sum())


def test_slices_are_separated_by_a_line_that_images_do_not_have(tmp_path: Path) -> None:
    assert _blue_pixels(plots.image_grid(rand(4, (2, 8, 8)), tmp_path / "two.png")) > 0
    assert _blue_pixels(plots.image_grid(rand(4, (1, 8, 8)), tmp_path / "one.png")) == 0
    assert _blue_pixels(plots.image_grid(rand(4, (3, 8, 8)), tmp_path / "rgb.png")) == 0


@pytest.mark.parametrize("shape", [(2, 8, 8), (4, 4, 4, 4, 4)])
def test_train_and_sample_draw_every_plot_for_such_data(
    tmp_path: Path, shape: tuple[int, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI once trained all epochs, then failed on the plots (exit 2, curves.png only)."""
    from pyro_vae.cli.main import main

    np.save(tmp_path / "x.npy", rand(50, shape))
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "x.npy"), "--out", str(run), "--epochs", "1"]
    argv += ["--hidden", "8", "--latent-dim", "2", "--likelihood", "normal", "--quiet"]
    assert main([*argv, "--eval-num-samples", "2", "--eval-num-points", "5"]) == 0, (
        capsys.readouterr().err
    )
    names = ["curves.png", "reconstructions.png", "samples.png"]
    assert sorted(p.name for p in (run / "plots").iterdir()) == names
    assert main(["sample", str(run), "--num", "5", "--out", str(tmp_path / "s.png")]) == 0
    png_size(tmp_path / "s.png")
    assert main(["sample", str(run), "--num", "5", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (5, *shape)


def test_image_grid_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ncols"):
        plots.image_grid(rand(4, (1, 8, 8)), tmp_path / "grid.png", ncols=0)
    with pytest.raises(ValueError, match="images must be a numeric"):
        plots.image_grid(np.array([["a", "b"]]), tmp_path / "grid.png")  # type: ignore[arg-type]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(drawing.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        plots.image_grid(rand(4, (1, 8, 8)), tmp_path / "grid.png")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- samples


@pytest.mark.parametrize("shape", SHAPES)
def test_samples_writes_titled_png(tmp_path: Path, shape: tuple[int, ...]) -> None:
    titled = png_size(plots.samples(torch.rand(12, *shape), tmp_path / "samples.png"))
    plain = png_size(plots.image_grid(torch.rand(12, *shape), tmp_path / "plain.png"))
    assert titled[0] > plain[0]
    assert plots.SAMPLES_TITLE == "means of p(x|z), z ~ p(z)"


def test_samples_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(4, 2, 0, 8\)"):
        plots.samples(np.zeros((4, 2, 0, 8)), tmp_path / "samples.png")


# ----------------------------------------------------------------------------- reconstructions


@pytest.mark.parametrize("shape", SHAPES)
def test_reconstructions_writes_png(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x = torch.rand(12, *shape)
    out = plots.reconstructions(x, rand(12, shape), tmp_path / "recon.png")
    assert out == tmp_path / "recon.png"
    assert 0.1 < ratio(out) < 0.4  # one pair of rows of ten, plus row labels


def test_reconstructions_row_pairs(tmp_path: Path) -> None:
    two_rows = ratio(
        plots.reconstructions(
            rand(25, (1, 28, 28)), rand(25, (1, 28, 28)), tmp_path / "a.png", num=10
        )
    )
    six_rows = ratio(
        plots.reconstructions(
            rand(25, (1, 28, 28)), rand(25, (1, 28, 28)), tmp_path / "b.png", num=25
        )
    )
    assert six_rows == pytest.approx(3 * two_rows, rel=0.1)


def _drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Keep what the next figures hold instead of writing them: row labels, legends, lines."""
    seen: dict[str, Any] = {"labels": [], "legends": [], "lines": []}

    def keep(fig: Any, path: Any) -> Path:
        fig.canvas.draw()
        seen["labels"].append([t.get_text() for t in fig.texts])
        seen["legends"].append(
            [
                [t.get_text() for t in ax.get_legend().get_texts()]
                for ax in fig.axes
                if ax.get_legend()
            ]
        )
        seen["lines"].append([[line.get_xdata().tolist() for line in ax.lines] for ax in fig.axes])
        seen["note"] = fig.get_supxlabel()
        return Path(path)

    monkeypatch.setattr(drawing, "save", keep)
    monkeypatch.setattr(plots, "save", keep)
    return seen


def test_reconstructions_say_what_each_row_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binarized data: the grey data, the binary draw the model saw, and its reconstruction,
    each row labelled, so the draw's random-looking pixels are not taken for broken data."""
    seen = _drawn(monkeypatch)
    grey = rand(12, (1, 8, 8))
    draw = (grey > 0.5).astype(np.float32)
    plots.reconstructions(draw, grey, tmp_path / "plain.png")
    plots.reconstructions(draw, grey, tmp_path / "binarized.png", grey=grey, num=12)
    assert seen["labels"][0] == ["original", "reconstruction"]
    assert seen["labels"][1] == ["data (grey)", "binarized input", "reconstruction"] * 2
    with pytest.raises(ValueError, match="grey must have the shape of originals"):
        plots.reconstructions(draw, grey, tmp_path / "x.png", grey=grey[:3])


def test_reconstructions_of_binarized_data_show_the_grey_data(tmp_path: Path) -> None:
    x = rand(10, (1, 8, 8))
    plain = ratio(plots.reconstructions(x, x, tmp_path / "a.png"))
    three = ratio(plots.reconstructions(x, x, tmp_path / "b.png", grey=x))
    assert three == pytest.approx(1.5 * plain, rel=0.1)  # three rows where there were two


def test_reconstructions_accepts_flat_decoder_output(tmp_path: Path) -> None:
    x = rand(6, (1, 8, 8))
    png_size(plots.reconstructions(x, x.reshape(6, 64), tmp_path / "recon.png", num=3))


@pytest.mark.parametrize(
    ("originals", "recons", "match"),
    [
        ((4, 2, 0, 8), (4, 2, 0, 8), "originals must have shape"),
        ((4, 1, 8, 8), (4, 1, 28, 28), r"reconstructions must match .*\(4, 1, 28, 28\)"),
        ((4, 1, 8, 8), (3, 1, 8, 8), r"reconstructions must match .*\(3, 1, 8, 8\)"),
        ((4, 1, 8, 8), (), r"reconstructions must match .*got shape \(\)"),
    ],
)
def test_reconstructions_bad_shapes(
    tmp_path: Path, originals: tuple[int, ...], recons: tuple[int, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        plots.reconstructions(np.zeros(originals), np.zeros(recons), tmp_path / "r.png")


def test_reconstructions_bad_num(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num"):
        plots.reconstructions(rand(4, (64,)), rand(4, (64,)), tmp_path / "r.png", num=0)


# ----------------------------------------------------------------------------- curves


@pytest.mark.parametrize("epochs", [1, 3])
@pytest.mark.parametrize(
    "keys",
    [FULL_HISTORY_KEYS, ["train_elbo", "train_kl"], ["valid_reconstruction"], []],
)
def test_curves_writes_png(tmp_path: Path, epochs: int, keys: list[str]) -> None:
    out = plots.curves(history(epochs, keys), tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    assert ratio(out) == pytest.approx(400 / 1300, rel=0.1)  # three panels side by side


def test_curves_add_the_classifiers_accuracy_where_recorded(tmp_path: Path) -> None:
    hist = [{**h, "valid_accuracy": 0.5 + 0.1 * h["epoch"]} for h in history(3)]
    out = plots.curves(hist, tmp_path / "curves.png")
    assert ratio(out) == pytest.approx(400 / (1300 * 4 // 3), rel=0.1)  # a fourth panel


def test_curves_say_what_each_curve_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The train figures are a running mean over the epoch, the valid ones the weights at its
    end: the legend and a note say so, and the train points sit at mid-epoch."""
    seen = _drawn(monkeypatch)
    plots.curves(history(3), tmp_path / "curves.png")
    legends = seen["legends"][0]
    assert len(legends) == 3
    for legend in legends:
        assert legend == ["train: running mean over the epoch", "valid: at the epoch's end"]
    train, valid = seen["lines"][0][0]
    assert train == [0.5, 1.5, 2.5] and valid == [1.0, 2.0, 3.0]
    assert "mid-epoch" in seen["note"] and "epoch's end" in seen["note"]


def test_curves_tolerates_gaps_order_and_nan(tmp_path: Path) -> None:
    hist: list[dict[str, float]] = [
        {"epoch": 3, "train_elbo": -90.0, "valid_elbo": float("nan")},
        {"epoch": 1, "train_elbo": -120.0, "train_kl": 4.0},
        {"epoch": 2.5, "train_elbo": float("inf"), "valid_kl": np.float32(5.0)},  # type: ignore
    ]
    png_size(plots.curves(hist, tmp_path / "curves.png"))


@pytest.mark.parametrize(
    ("hist", "match"),
    [
        ([], "at least one epoch"),
        ({"epoch": 1}, "sequence of dicts"),
        ([{"train_elbo": 1.0}], r"history\[0\] must be a dict with an 'epoch' key"),
        ([{"epoch": 1}, {"epoch": 2, "train_kl": "big"}], r"history\[1\]\['train_kl'\]"),
        ([{"epoch": float("nan")}], "finite"),
    ],
)
def test_curves_bad_history(tmp_path: Path, hist: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plots.curves(hist, tmp_path / "curves.png")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- write_run_plots


def test_write_run_plots_all(tmp_path: Path) -> None:
    x = torch.rand(16, 1, 28, 28)
    paths = plots.write_run_plots(
        tmp_path / "run", history=history(3), originals=x, recons=x, sample_images=x
    )
    plot_dir = tmp_path / "run" / "plots"
    names = ["curves.png", "reconstructions.png", "samples.png"]
    assert paths == [plot_dir / name for name in names]
    assert sorted(p.name for p in plot_dir.iterdir()) == names
    for path in paths:
        png_size(path)


def test_write_run_plots_curves_only(tmp_path: Path) -> None:
    paths = plots.write_run_plots(str(tmp_path), history=history(1))
    assert paths == [tmp_path / "plots" / "curves.png"]
    png_size(paths[0])


def test_write_run_plots_needs_both_halves_of_reconstructions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="originals and recons"):
        plots.write_run_plots(tmp_path, history=history(1), originals=rand(4, (64,)))


def test_no_pyplot(tmp_path: Path) -> None:
    """Plotting never imports pyplot, so it needs no display and no global figure registry."""
    code = (
        "import sys, numpy as np; from pyro_vae import plots\n"
        "plots.write_run_plots(sys.argv[1], history=[{'epoch': 1, 'train_elbo': -1.0}],\n"
        "    originals=np.ones((2, 64)), recons=np.ones((2, 64)), sample_images=np.ones((2, 5)))\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code, str(tmp_path)], check=True)
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3


def test_plot_run_draws_what_the_cli_draws_for_a_fit_from_python(tmp_path: Path) -> None:
    from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit

    tc = TrainConfig(epochs=1, out=str(tmp_path / "run"), eval_num_samples=2, eval_num_points=5)
    result = fit(RunConfig(VAEConfig(latent_dim=2, hidden=(8,)), tc), progress=False)
    assert not (tmp_path / "run" / "plots").exists()  # the trainer draws nothing
    paths = plots.plot_run(result)
    assert [p.name for p in paths] == ["curves.png", "reconstructions.png", "samples.png"]
    assert all(p.parent == tmp_path / "run" / "plots" and p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="write=False"):
        plots.plot_run(
            fit(RunConfig(VAEConfig(latent_dim=2, hidden=(8,)), tc), write=False, progress=False)
        )
