"""Preprocessing: deterministic eval transform, augmentations of the right shape, and shell
normalisation that crops to the object and blacks out the background."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from embedder.transforms import (
    PreprocessConfig,
    eval_transform,
    normalize_shell_photo,
    train_transform,
)


def shell_on_white(size=(300, 200)) -> Image.Image:
    image = Image.new("RGB", size, (245, 245, 240))
    ImageDraw.Draw(image).ellipse((40, 60, 120, 150), fill=(150, 90, 40))
    return image


def test_eval_transform_is_deterministic_and_normalised():
    transform = eval_transform(PreprocessConfig())
    image = shell_on_white()
    a, b = transform(image), transform(image)
    assert a.shape == (3, 224, 224)
    assert torch.equal(a, b)


def test_train_transform_augments_but_keeps_shape():
    transform = train_transform(PreprocessConfig(input_size=96))
    image = shell_on_white()
    torch.manual_seed(0)
    a, b = transform(image), transform(image)
    assert a.shape == b.shape == (3, 96, 96)
    assert not torch.equal(a, b)


def test_shell_normalisation_crops_to_the_object_on_black():
    out = normalize_shell_photo(shell_on_white(), output_size=128)
    array = np.asarray(out)
    assert out.size == (128, 128)
    assert array[2, 2].sum() == 0  # background replaced by black
    centre = array[64, 64]
    assert centre[0] > 100 and centre[2] < 100  # the brown shell fills the middle
    object_share = (array.sum(axis=2) > 30).mean()
    assert object_share > 0.4  # cropped: the object is large in the frame


def test_shell_normalisation_leaves_photos_without_a_plain_background_padded_only():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, size=(120, 200, 3), dtype=np.uint8))
    out = normalize_shell_photo(noise, output_size=64)
    assert out.size == (64, 64)


def test_shell_normalisation_is_a_config_flag_of_the_eval_transform():
    config = PreprocessConfig().with_shell_normalisation(True)
    assert config.normalize_shells
    assert eval_transform(config)(shell_on_white()).shape == (3, 224, 224)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
