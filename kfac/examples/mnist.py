"""MNIST-format data for the examples: an IDX reader and a `tf.data` pipeline.

`load_mnist` keeps the signature of the original `kfac/examples/mnist.py`. The
original downloaded MNIST at run time; this machine has no internet, so the
data come from any local folder in the MNIST file format (IDX, gzip-compressed
or raw). The default folder holds Fashion-MNIST (same format and sizes: 60000
training and 10000 test images of 28x28 pixels, 10 classes) as installed by the
Debian package `dataset-fashion-mnist`.

The IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header of
two zero bytes, one byte for the element type (0x08 = uint8), one byte for the
number of dimensions `n`, then `n` big-endian uint32 sizes, then the elements
in row-major order. Read as one big-endian int32, the first four bytes are the
"magic number": 2051 (0x00000803) for an image file (uint8, 3 dims) and 2049
(0x00000801) for a label file (uint8, 1 dim).
"""

import gzip
import os
import struct
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIZE = 28
NUM_CLASSES = 10
FAKE_DATA_SEED = 42

# IDX element-type byte -> numpy dtype (big-endian where it matters).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# File stems per split; the reader also accepts the `train-images.idx3-ubyte`
# spelling that some mirrors use, each with or without a `.gz` suffix.
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str, expected_magic: Optional[int] = None) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or raw) into a numpy array.

    Compression is recognised from the file's first bytes, not its name.

    Args:
      path: the file to read.
      expected_magic: when given, the magic number the header must carry
        (`IMAGES_MAGIC` or `LABELS_MAGIC` for MNIST files).

    Returns:
      An array of the header's shape and element type (native byte order).

    Raises:
      ValueError: the header is malformed (non-zero leading bytes, unknown
        element type, unexpected magic number) or the data size does not match
        the sizes in the header. The message names the file.
    """
    with open(path, "rb") as raw_file:
        start = raw_file.read(2)
    opener = gzip.open if start == _GZIP_MAGIC else open
    with opener(path, "rb") as idx_file:
        content = idx_file.read()

    if len(content) < 4:
        raise ValueError(
            "IDX file {!r} is too short for a header: {} bytes.".format(
                path, len(content)
            )
        )
    (magic,) = struct.unpack(">i", content[:4])
    zero_bytes, type_code, num_dims = content[:2], content[2], content[3]
    if zero_bytes != b"\x00\x00" or type_code not in _IDX_DTYPES:
        raise ValueError(
            "{!r} is not an IDX file: bad magic number 0x{:08x} (expected two zero "
            "bytes, an element type in {}, and the number of dimensions).".format(
                path, magic & 0xFFFFFFFF, sorted(hex(code) for code in _IDX_DTYPES)
            )
        )
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            "IDX file {!r} has magic number {} (0x{:08x}); "
            "expected {} (0x{:08x}).".format(
                path, magic, magic, expected_magic, expected_magic
            )
        )

    header_size = 4 + 4 * num_dims
    if len(content) < header_size:
        raise ValueError(
            "IDX file {!r} is truncated inside its header: {} bytes, expected at "
            "least {} for {} dimensions.".format(
                path, len(content), header_size, num_dims
            )
        )
    shape = struct.unpack(">{}I".format(num_dims), content[4:header_size])
    dtype = _IDX_DTYPES[type_code]
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data_bytes = len(content) - header_size
    if data_bytes != expected_bytes:
        raise ValueError(
            "IDX file {!r} has {} data bytes; "
            "its header (shape {}, {}) needs {}.".format(
                path, data_bytes, tuple(shape), dtype.name, expected_bytes
            )
        )
    array = np.frombuffer(content, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _missing_data_message(data_dir: str, what: str) -> str:
    return (
        "{}. The examples need MNIST-format data (files train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, "
        "each raw or .gz). Install Fashion-MNIST with `apt-get install {}` (it goes "
        "to {}), or pass --data_dir with a folder holding these files "
        "(or use --use_fake_data). Folder looked at: {!r}.".format(
            what, DEBIAN_PACKAGE, DEFAULT_DATA_DIR, data_dir
        )
    )


def _find_idx_file(data_dir: str, stem: str) -> str:
    """The path of `stem` in `data_dir`, trying the usual spellings."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        _missing_data_message(
            data_dir, "No file {}[.gz] in {!r}".format(stem, data_dir)
        )
    )


def load_mnist_arrays(
    data_dir: Optional[str] = None, split: str = "train", flatten_images: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """Loads one split of an MNIST-format folder into memory.

    Args:
      data_dir: folder with the IDX files; None means `DEFAULT_DATA_DIR`
        (Fashion-MNIST from the Debian package `dataset-fashion-mnist`).
      split: `"train"` (the `train-*` files) or `"test"` (the `t10k-*` files).
      flatten_images: return images as `[N, 784]` rather than `[N, 28, 28, 1]`.

    Returns:
      `(images, labels)`: float32 images with pixel values scaled to [0, 1],
      and int64 labels `[N]`.

    Raises:
      FileNotFoundError: the folder or one of its files is missing; the
        message says how to get the data.
      ValueError: unknown `split`, or files that are not MNIST image/label
        files or whose counts disagree.
    """
    uint8_images, labels = _load_split(data_dir, split)
    images = uint8_images.astype(np.float32) / 255.0
    return _shape_images(images, flatten_images), labels


def _load_split(data_dir: Optional[str], split: str) -> Tuple[np.ndarray, np.ndarray]:
    """`(uint8 images [N, 28, 28], int64 labels [N])` of one split."""
    if split not in _SPLIT_FILES:
        raise ValueError(
            "split must be one of {}, got {!r}.".format(sorted(_SPLIT_FILES), split)
        )
    data_dir = DEFAULT_DATA_DIR if data_dir is None else data_dir
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            _missing_data_message(
                data_dir, "Data folder {!r} does not exist".format(data_dir)
            )
        )
    images_stem, labels_stem = _SPLIT_FILES[split]
    images_path = _find_idx_file(data_dir, images_stem)
    labels_path = _find_idx_file(data_dir, labels_stem)
    images = read_idx(images_path, expected_magic=IMAGES_MAGIC)
    labels = read_idx(labels_path, expected_magic=LABELS_MAGIC)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            "Images in {!r} are {}x{}; expected {}x{}.".format(
                images_path, images.shape[1], images.shape[2], IMAGE_SIZE, IMAGE_SIZE
            )
        )
    if len(images) != len(labels):
        raise ValueError(
            "{!r} holds {} images but {!r} holds {} labels.".format(
                images_path, len(images), labels_path, len(labels)
            )
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(
            "Labels in {!r} must lie in [0, {}); found {}.".format(
                labels_path, NUM_CLASSES, int(labels.max())
            )
        )
    return images, labels.astype(np.int64)


def _shape_images(images: np.ndarray, flatten_images: bool) -> np.ndarray:
    if flatten_images:
        return images.reshape([-1, IMAGE_SIZE * IMAGE_SIZE])
    return images.reshape([-1, IMAGE_SIZE, IMAGE_SIZE, 1])


def make_fake_data(
    num_examples: int, flatten_images: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """Random stand-in data, as in the original: uniform pixels, uniform labels.

    Returns:
      float32 images in [0, 1) (`[N, 784]` or `[N, 28, 28, 1]`) and int64
      labels in [0, 10), drawn from `np.random.RandomState(42)`.
    """
    rng = np.random.RandomState(FAKE_DATA_SEED)
    images = rng.rand(num_examples, IMAGE_SIZE * IMAGE_SIZE).astype(np.float32)
    labels = rng.randint(0, NUM_CLASSES, num_examples).astype(np.int64)
    return _shape_images(images, flatten_images), labels


def load_mnist(
    data_dir: Optional[str],
    num_epochs: int,
    batch_size: int,
    flatten_images: bool = True,
    use_fake_data: bool = False,
):
    """The next mini-batch of a shuffled, repeated MNIST `tf.data` pipeline.

    Builds `Dataset.from_tensor_slices(...).repeat(num_epochs).shuffle(N)
    .batch(batch_size)` on the training split and returns the `get_next()`
    tensors of a `tf.data.make_one_shot_iterator`; running them past the last
    batch raises `tf.errors.OutOfRangeError` (which ends a
    `MonitoredTrainingSession`).

    Two changes from the original, both invisible to model code: the images
    enter the graph as uint8 and are scaled inside the pipeline (a 4x smaller
    constant), and batches are built with `drop_remainder=True`, so every
    batch has exactly `batch_size` rows (a static batch size that
    multi-tower code can always split evenly). The original used the 55000
    images left after a validation split; this loader uses all 60000.

    Args:
      data_dir: MNIST-format folder (see `load_mnist_arrays`); None means
        `DEFAULT_DATA_DIR`. Ignored when `use_fake_data` is True.
      num_epochs: passes over the data.
      batch_size: rows per batch.
      flatten_images: images as `[B, 784]` rather than `[B, 28, 28, 1]`.
      use_fake_data: use `4 * batch_size` random examples (seed 42) instead
        of files (no data needed).

    Returns:
      `(examples, labels)`: float32 `[B, 784]` or `[B, 28, 28, 1]` with values
      in [0, 1], and int64 `[B]`.
    """
    if use_fake_data:
        images, labels = make_fake_data(4 * batch_size, flatten_images)
    else:
        uint8_images, labels = _load_split(data_dir, "train")
        images = _shape_images(uint8_images, flatten_images)
    num_examples = len(labels)

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.repeat(num_epochs).shuffle(num_examples)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if images.dtype == np.uint8:
        dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    return tf.data.make_one_shot_iterator(dataset).get_next()
