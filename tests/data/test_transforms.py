"""Device transforms: shapes, normalisation, exact crops and generator determinism."""

from __future__ import annotations

import torch

from livar_bench.data.transforms import DeviceTransform

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.1)


def _images(b: int = 4, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def _normalised(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_train_shape_dtype_and_normalisation_of_constant_images():
    tf = DeviceTransform(16, MEAN, STD)
    values = torch.tensor([0, 51, 255], dtype=torch.uint8)
    images = values.view(1, 3, 1, 1).expand(5, 3, 9, 7).contiguous()  # every pixel channel-constant
    out = tf.train(images, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 16, 16) and out.dtype == torch.float32
    # Any crop/flip/resample of a constant image is the same constant, so only normalisation shows.
    expected = (values.float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5)


def test_full_crop_train_is_identity_or_horizontal_flip():
    # With area 1 and aspect 1 the crop is the whole image; only the flip is random.
    tf = DeviceTransform(12, MEAN, STD, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    images = _images(16)
    out = tf.train(images, torch.Generator().manual_seed(1))
    ref = _normalised(images)
    flips = 0
    for i in range(len(images)):
        same = torch.allclose(out[i], ref[i], atol=1e-4)
        flipped = torch.allclose(out[i], ref[i].flip(-1), atol=1e-4)
        assert same or flipped
        flips += flipped and not same
    assert 0 < flips < len(images)  # both outcomes occur in 16 fair coin flips (p of failing ~3e-5)


def test_train_same_generator_seed_same_output_other_seed_differs():
    tf = DeviceTransform(10, MEAN, STD)
    images = _images(6)
    a = tf.train(images, torch.Generator().manual_seed(7))
    b = tf.train(images, torch.Generator().manual_seed(7))
    c = tf.train(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_train_does_not_touch_global_rng():
    tf = DeviceTransform(10, MEAN, STD)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tf.train(_images(4), torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


def test_eval_is_deterministic_and_exact_without_crop_or_resize():
    images = _images(3, 10, 10)
    tf = DeviceTransform(10, MEAN, STD, eval_crop=1.0)
    a, b = tf.eval(images), tf.eval(images)
    assert torch.equal(a, b)
    assert torch.allclose(a, _normalised(images), atol=1e-6)


def test_eval_centre_crop_takes_the_middle():
    # 8x8 image, eval_crop 0.5 keeps the central 4x4 block (rows/cols 2..5); output size 4 = no resize.
    images = _images(2, 8, 8)
    tf = DeviceTransform(4, MEAN, STD, eval_crop=0.5)
    out = tf.eval(images)
    assert out.shape == (2, 3, 4, 4)
    assert torch.allclose(out, _normalised(images[:, :, 2:6, 2:6]), atol=1e-6)


def test_eval_upsamples_small_images_to_model_size():
    out = DeviceTransform(32, MEAN, STD, eval_crop=1.0).eval(_images(2, 8, 8))
    assert out.shape == (2, 3, 32, 32)
    assert torch.isfinite(out).all()


def test_input_images_are_not_modified():
    images = _images(4)
    before = images.clone()
    tf = DeviceTransform(8, MEAN, STD)
    tf.train(images, torch.Generator().manual_seed(0))
    tf.eval(images)
    assert torch.equal(images, before)
