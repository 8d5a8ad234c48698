"""Demo: a narrow PConv UNet trained on photos bundled with scikit-image, on a CPU.

    python -m pconv_jax.train --config experiments/configs/demo.py --workdir runs/demo
    make demo        # the same, set-up included

96x96 random crops (at 1-3x the scale that fits the photo to 96 px, each through a random
colour map: data.colour_jitter=0.5) of twelve photos bundled with scikit-image (four colour,
eight greyscale textures and scenes), irregular masks, a depth-5 UNet with widths 16..128,
batch 4, 6,000 steps: about 3 minutes on 2 CPU cores. Two colour photos (chelsea, coffee) are
held out: every 500 steps the run scores 24 fixed held-out image-mask pairs (`eval_psnr`,
`eval_l1`) next to OpenCV's Telea fill of the same pairs (`eval_psnr_telea`, 24.3 dB) in
metrics.jsonl; expect ~23.9 dB at the end, 0.3-0.4 dB short of Telea. Without the colour
jitter the grey majority teaches grey fills (experiments/README.md, "Small holes and colour").
Without a VGG-16 file (--config.vgg.weights=FILE) the perceptual and style terms are off
(vgg.fallback='off'): on random VGG features they mean nothing. STEPS was picked from the
held-out curve in experiments/README.md.
"""

from pconv_jax.config import default_config, model_settings
from pconv_jax.model import UNetConfig

TRAIN_PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field",
                "camera", "coins", "moon", "clock", "brick", "grass", "gravel", "cell")
HELD_OUT = ("chelsea", "coffee")
STEPS = 6000
EVAL_EVERY = 500


def get_config():
    config = default_config()
    config.data.source = "samples:" + ",".join(TRAIN_PHOTOS)
    config.data.eval_source = "samples:" + ",".join(HELD_OUT)
    config.data.eval_pairs = 24
    config.data.image_size = 96
    config.data.scale_range = (1.0, 3.0)  # shorter side 96..288 px: crops at several scales
    config.data.colour_jitter = 0.5  # tints the grey photos, moves the colour ones' hues
    config.model.update(model_settings(UNetConfig.tiny(depth=5, width=16, image_size=96)))
    config.train.batch_size = 4
    config.train.steps = STEPS
    config.train.log_every = 50
    config.train.image_every = 1000
    config.train.eval_every = EVAL_EVERY
    config.optim.lr = 1e-3
    config.checkpoint.every_steps = 1000
    config.checkpoint.keep = 2
    config.vgg.fallback = "off"
    return config
