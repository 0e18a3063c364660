"""The published files of the built-in data sets: names, sizes, checksums and mirrors.

:mod:`~pyro_vae.data.download` fetches and verifies a file against this catalogue before
:mod:`~pyro_vae.data.builtin` parses it. The sizes and hashes are those of the files as
their authors publish them (MNIST: LeCun et al.; Fashion-MNIST: Zalando Research;
binarized MNIST: Salakhutdinov & Murray 2008, as
distributed by H. Larochelle), so a file from any mirror is checked against the
original.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyro_vae.data.base import SPLITS

__all__ = ["MIRRORS", "PARTS", "PUBLISHED_FILES", "PublishedFile"]


@dataclass(frozen=True)
class PublishedFile:
    """The published size (bytes), MD5 and SHA-256 of one file of a built-in data set."""

    size: int
    md5: str
    sha256: str


_F = PublishedFile
#: For each built-in data set downloaded, its published files (see the data README shipped
#: with the test data): ``{dataset: {file name: PublishedFile}}``.
PUBLISHED_FILES: dict[str, dict[str, PublishedFile]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": _F(
            9912422,
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        "train-labels-idx1-ubyte.gz": _F(
            28881,
            "d53e105ee54ea40749a09fcbcd1e9432",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        "t10k-images-idx3-ubyte.gz": _F(
            1648877,
            "9fb629c4189551a2d022fa330f9573f3",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        "t10k-labels-idx1-ubyte.gz": _F(
            4542,
            "ec29112dd5afa0611ce80d1b7f02629c",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": _F(
            26421880,
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        "train-labels-idx1-ubyte.gz": _F(
            29515,
            "25c81989df183df01b3e8a0aad5dffbe",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        "t10k-images-idx3-ubyte.gz": _F(
            4422102,
            "bef4ecab320f06d8554ea6380940ec79",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        "t10k-labels-idx1-ubyte.gz": _F(
            5148,
            "bb300cfdad3c16e7a12a480ee83cd310",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    },
    "binarized-mnist": {
        "binarized_mnist_train.amat.gz": _F(
            2196952,
            "55c6be0db63f47a228822edc21049d6f",
            "af247bd6075cf9adc4715459dcd5f13eaa99a2c92d8d81379a05da94770b6c0e",
        ),
        "binarized_mnist_valid.amat.gz": _F(
            439620,
            "bf325c5893052cb8b540dfeb3c0c6fbe",
            "533b71bc0198f4d73c54ae5fe6c96fc08dc3cf1b3fae24c5521dbc0452507e38",
        ),
        "binarized_mnist_test.amat.gz": _F(
            416802,
            "f7f18e7c5d551792f6aab10d62a7ea74",
            "32a3c54d03504632bf9f131b4a148c7567aa6fc87da017049b044bdc14c2a0f2",
        ),
        "binarized_mnist_train.amat": _F(
            78400000,
            "db28b1a6ae0fe70cbd3da91acf46e477",
            "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
        ),
        "binarized_mnist_valid.amat": _F(
            15680000,
            "bf37822a04e94123630de6a7dfd9c9ef",
            "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
        ),
        "binarized_mnist_test.amat": _F(
            15680000,
            "14e41ae11040adba6ab8cb291eda0dd8",
            "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
        ),
    },
}

_IDX_PARTS: tuple[tuple[str, ...], ...] = (
    ("train-images-idx3-ubyte.gz",),
    ("train-labels-idx1-ubyte.gz",),
    ("t10k-images-idx3-ubyte.gz",),
    ("t10k-labels-idx1-ubyte.gz",),
)

#: For each data set, the files it needs, in order; each entry lists acceptable names,
#: preferred first (binarized MNIST may be gzipped or not).
PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "mnist": _IDX_PARTS,
    "fashion-mnist": _IDX_PARTS,
    "binarized-mnist": tuple(
        (f"binarized_mnist_{s}.amat.gz", f"binarized_mnist_{s}.amat") for s in SPLITS
    ),
}

#: The default base URLs of each data set's files, tried in order (``$PYRO_VAE_MIRROR`` or
#: ``load_dataset(..., mirrors=[...])`` replaces them).
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "binarized-mnist": ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
}
