"""The smooth-fill check and the smooth training images."""

import numpy as np

from pconv_jax import data, smooth


class MeanFill:
    """A stand-in inpainter: holes get the mean colour of the image's valid pixels."""

    train_size = 32

    def __call__(self, image, mask, strategy="auto"):
        image, mask = np.asarray(image, np.float32), np.asarray(mask)
        single = image.ndim == 3
        images, masks = (image[None], mask[None]) if single else (image, mask)
        out = images.copy()
        for k in range(len(images)):
            hole = masks[k] == 0
            out[k][hole] = images[k][~hole].mean(axis=0)
        return out[0] if single else out


def test_a_mean_fill_is_exact_on_constant_colours_and_not_on_gradients():
    """The check's constant-colour figures are 0 (to float rounding) for a fill that copies
    the valid pixels' mean, over all 27 colours; on gradients the same fill errs by more than
    a tenth somewhere (a gradient's hole is not its mean) and Telea less than that fill."""
    check = smooth.smooth_fill_check(MeanFill(), masks=3, seed=2)
    assert len(check["constant"]["per_colour"]) == 27
    assert check["constant"]["worst"] < 1e-5 and check["constant"]["spread"] < 1e-5
    assert check["gradient"]["model"]["worst"] > 0.1
    assert check["gradient"]["telea"]["mean"] < check["gradient"]["model"]["mean"]
    assert "constant colour (27 colours): worst error 0.000" in smooth.describe(check)


def test_smooth_training_images_are_constant_or_linear():
    """smooth_image gives uint8 (S,S,3) images that are either one colour or a linear ramp
    (second differences within rounding along both axes), both kinds over 200 draws."""
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(200):
        image = data.smooth_image(24, rng)
        assert image.shape == (24, 24, 3) and image.dtype == np.uint8
        x = image.astype(int)
        if (x == x[0, 0]).all():
            kinds.add("constant")
            continue
        kinds.add("gradient")
        assert np.abs(np.diff(x, 2, axis=0)).max() <= 2
        assert np.abs(np.diff(x, 2, axis=1)).max() <= 2
    assert kinds == {"constant", "gradient"}
