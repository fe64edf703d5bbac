"""Tests for kfac/examples/mnist.py: the IDX reader and the tf.data pipeline."""

import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.examples import mnist


def _idx_bytes(array, type_code=0x08, magic=None):
    """Encodes `array` as IDX by hand: header then big-endian elements."""
    dtypes = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}
    if magic is None:
        header = bytes([0, 0, type_code, array.ndim])
    else:
        header = struct.pack(">i", magic)
    header += b"".join(struct.pack(">I", size) for size in array.shape)
    return header + np.asarray(array, dtype=dtypes[type_code]).tobytes()


def _write(path, content, compress):
    opener = gzip.open if compress else open
    with opener(str(path), "wb") as out:
        out.write(content)
    return str(path)


def _write_mnist_folder(
    folder, images, labels, split="train", compress=True, dotted=False
):
    prefix = {"train": "train", "test": "t10k"}[split]
    suffix = ".gz" if compress else ""
    sep = "." if dotted else "-"
    _write(
        folder / "{}-images{}idx3-ubyte{}".format(prefix, sep, suffix),
        _idx_bytes(images),
        compress,
    )
    _write(
        folder / "{}-labels{}idx1-ubyte{}".format(prefix, sep, suffix),
        _idx_bytes(labels),
        compress,
    )


def _small_dataset(num_examples=6, seed=0):
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, size=(num_examples, 28, 28)).astype(np.uint8)
    labels = rng.randint(0, 10, size=num_examples).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_round_trips_uint8_images_and_labels(tmp_path, compress):
    images, labels = _small_dataset()
    images_path = _write(tmp_path / "images", _idx_bytes(images), compress)
    labels_path = _write(tmp_path / "labels", _idx_bytes(labels), compress)

    read_images = mnist.read_idx(images_path, expected_magic=mnist.IMAGES_MAGIC)
    read_labels = mnist.read_idx(labels_path, expected_magic=mnist.LABELS_MAGIC)

    assert read_images.dtype == np.uint8 and read_images.shape == (6, 28, 28)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)


@pytest.mark.parametrize("type_code, dtype", [(0x0C, np.int32), (0x0D, np.float32)])
def test_read_idx_decodes_big_endian_element_types(tmp_path, type_code, dtype):
    array = np.array([[1, -2, 70000], [3, 4, -5]]).astype(dtype)
    if dtype == np.float32:
        array = array + np.float32(0.25)
    path = _write(tmp_path / "array", _idx_bytes(array, type_code), compress=False)

    result = mnist.read_idx(path)

    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, array)


def test_read_idx_rejects_bad_magic(tmp_path):
    path = _write(
        tmp_path / "bad", b"\x01\x02\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", False
    )
    with pytest.raises(
        ValueError, match="not an IDX file: bad magic number 0x01020801"
    ):
        mnist.read_idx(path)


def test_read_idx_rejects_unknown_element_type(tmp_path):
    path = _write(
        tmp_path / "bad", b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x05", False
    )
    with pytest.raises(ValueError, match="bad magic number"):
        mnist.read_idx(path)


def test_read_idx_rejects_wrong_expected_magic(tmp_path):
    _, labels = _small_dataset()
    path = _write(tmp_path / "labels.gz", _idx_bytes(labels), True)
    with pytest.raises(ValueError, match="magic number 2049 .* expected 2051"):
        mnist.read_idx(path, expected_magic=mnist.IMAGES_MAGIC)


@pytest.mark.parametrize("cut", [1, 7])
def test_read_idx_rejects_size_mismatch(tmp_path, cut):
    images, _ = _small_dataset()
    content = _idx_bytes(images)
    path = _write(tmp_path / "short", content[:-cut], False)
    with pytest.raises(
        ValueError, match=r"data bytes; its header \(shape \(6, 28, 28\)"
    ):
        mnist.read_idx(path)
    path = _write(tmp_path / "long", content + b"\x00", False)
    with pytest.raises(ValueError, match="4705 data bytes"):
        mnist.read_idx(path)


def test_read_idx_rejects_truncated_header(tmp_path):
    path = _write(tmp_path / "tiny", b"\x00\x00\x08\x03\x00\x00", False)
    with pytest.raises(ValueError, match="truncated inside its header"):
        mnist.read_idx(path)
    path = _write(tmp_path / "tinier", b"\x00\x00", False)
    with pytest.raises(ValueError, match="too short"):
        mnist.read_idx(path)


@pytest.mark.parametrize(
    "compress, dotted", [(True, False), (False, False), (True, True)]
)
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_arrays_scales_and_shapes(tmp_path, compress, dotted, split):
    images, labels = _small_dataset()
    _write_mnist_folder(tmp_path, images, labels, split, compress, dotted)

    flat_images, flat_labels = mnist.load_mnist_arrays(str(tmp_path), split)
    square_images, _ = mnist.load_mnist_arrays(
        str(tmp_path), split, flatten_images=False
    )

    expected = images.astype(np.float64) / 255.0
    assert flat_images.dtype == np.float32 and flat_images.shape == (6, 784)
    assert square_images.shape == (6, 28, 28, 1)
    np.testing.assert_allclose(flat_images, expected.reshape(6, 784), rtol=1e-6)
    np.testing.assert_allclose(square_images[..., 0], expected, rtol=1e-6)
    assert flat_labels.dtype == np.int64
    np.testing.assert_array_equal(flat_labels, labels)


def test_load_mnist_arrays_missing_folder_says_how_to_get_data(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as error:
        mnist.load_mnist_arrays(missing, "train")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data_dir" in message
    assert missing in message


def test_load_mnist_arrays_missing_file_is_named(tmp_path):
    images, labels = _small_dataset()
    _write_mnist_folder(tmp_path, images, labels, "train")
    with pytest.raises(FileNotFoundError, match="No file t10k-images-idx3-ubyte"):
        mnist.load_mnist_arrays(str(tmp_path), "test")


def test_load_mnist_arrays_checks_counts_labels_and_split(tmp_path):
    images, labels = _small_dataset()
    _write_mnist_folder(tmp_path, images, labels[:5], "train")
    with pytest.raises(ValueError, match="holds 6 images but .* holds 5 labels"):
        mnist.load_mnist_arrays(str(tmp_path), "train")

    bad_labels = labels.copy()
    bad_labels[0] = 12
    _write_mnist_folder(tmp_path, images, bad_labels, "test")
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\); found 12"):
        mnist.load_mnist_arrays(str(tmp_path), "test")

    with pytest.raises(ValueError, match="split must be one of .*got 'validation'"):
        mnist.load_mnist_arrays(str(tmp_path), "validation")


def test_load_mnist_arrays_rejects_swapped_files(tmp_path):
    images, labels = _small_dataset()
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(labels), False)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(images), False)
    with pytest.raises(ValueError, match="expected 2051"):
        mnist.load_mnist_arrays(str(tmp_path), "train")


def test_load_mnist_arrays_rejects_wrong_image_size(tmp_path):
    images = np.zeros((2, 14, 14), np.uint8)
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(images), False)
    _write(
        tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(2, np.uint8)), False
    )
    with pytest.raises(ValueError, match="are 14x14; expected 28x28"):
        mnist.load_mnist_arrays(str(tmp_path), "train")


def _run_all_batches(tensors):
    batches = []
    with tf.Session() as sess:
        while True:
            try:
                batches.append(sess.run(tensors))
            except tf.errors.OutOfRangeError:
                return batches


@pytest.mark.parametrize("flatten_images", [True, False])
def test_load_mnist_fake_data(flatten_images):
    batch_size = 8
    with tf.Graph().as_default():
        examples, labels = mnist.load_mnist(
            None,
            num_epochs=2,
            batch_size=batch_size,
            flatten_images=flatten_images,
            use_fake_data=True,
        )
        image_shape = [784] if flatten_images else [28, 28, 1]
        assert examples.shape.as_list() == [batch_size] + image_shape
        assert examples.dtype == tf.float32 and labels.dtype == tf.int64
        batches = _run_all_batches((examples, labels))

    # 4·batch_size examples per epoch, 2 epochs.
    assert len(batches) == 8
    rng = np.random.RandomState(42)
    expected_images = rng.rand(32, 784).astype(np.float32)
    expected_labels = rng.randint(0, 10, 32)
    got_images = np.concatenate([b[0].reshape(batch_size, 784) for b in batches])
    got_labels = np.concatenate([b[1] for b in batches])
    assert 0.0 <= got_images.min() and got_images.max() < 1.0
    # Shuffled, but every example appears exactly twice with its label.
    order = np.lexsort(got_images.T[::-1])
    expected = np.concatenate([expected_images, expected_images])
    expected_order = np.lexsort(expected.T[::-1])
    np.testing.assert_array_equal(got_images[order], expected[expected_order])
    np.testing.assert_array_equal(
        got_labels[order], np.concatenate([expected_labels] * 2)[expected_order]
    )


def test_make_fake_data_matches_seed_42():
    images, labels = mnist.make_fake_data(5, flatten_images=False)
    rng = np.random.RandomState(42)
    np.testing.assert_array_equal(
        images.reshape(5, 784), rng.rand(5, 784).astype(np.float32)
    )
    np.testing.assert_array_equal(labels, rng.randint(0, 10, 5))
    assert images.shape == (5, 28, 28, 1) and labels.dtype == np.int64


def test_load_mnist_reads_idx_folder_and_drops_partial_batch(tmp_path):
    images, labels = _small_dataset(num_examples=6)
    _write_mnist_folder(tmp_path, images, labels, "train", compress=True)
    with tf.Graph().as_default():
        examples, batch_labels = mnist.load_mnist(
            str(tmp_path), num_epochs=2, batch_size=4, flatten_images=False
        )
        assert examples.shape.as_list() == [4, 28, 28, 1]
        batches = _run_all_batches((examples, batch_labels))

    # 12 examples make 3 full batches of 4.
    assert len(batches) == 3
    got_images = np.concatenate([b[0] for b in batches])[..., 0]
    got_labels = np.concatenate([b[1] for b in batches])
    assert got_labels.dtype == np.int64
    # Each batch row is one of the stored images, scaled by 1/255, with its label.
    for image, label in zip(got_images, got_labels):
        matches = [
            i for i in range(6) if np.allclose(image, images[i] / 255.0, atol=1e-7)
        ]
        assert len(matches) == 1
        assert label == labels[matches[0]]
    assert len(got_labels) == 12


def test_load_mnist_missing_folder_raises_before_building(tmp_path):
    with tf.Graph().as_default():
        with pytest.raises(
            FileNotFoundError, match="apt-get install dataset-fashion-mnist"
        ):
            mnist.load_mnist(str(tmp_path / "missing"), num_epochs=1, batch_size=4)


_DEBIAN_DATA = os.path.isdir(mnist.DEFAULT_DATA_DIR)


@pytest.mark.skipif(
    not _DEBIAN_DATA,
    reason="Fashion-MNIST not installed at {} (apt-get install {})".format(
        mnist.DEFAULT_DATA_DIR, mnist.DEBIAN_PACKAGE
    ),
)
def test_debian_fashion_mnist_loads():
    train_images, train_labels = mnist.load_mnist_arrays(None, "train")
    test_images, test_labels = mnist.load_mnist_arrays(mnist.DEFAULT_DATA_DIR, "test")
    assert train_images.shape == (60000, 784) and test_images.shape == (10000, 784)
    assert 0.0 <= train_images.min() and train_images.max() <= 1.0
    assert train_images.max() == 1.0  # some pixel is saturated
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    np.testing.assert_array_equal(np.bincount(train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)
