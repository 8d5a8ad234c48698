"""Demo: a narrow PConv UNet trained on the photos bundled with scikit-image, on a CPU.

    python -m pconv_jax.train --config experiments/configs/demo.py --workdir runs/demo
    make demo        # the same, set-up included

96x96 random crops of the six scikit-image photos, irregular masks, a depth-5 UNet with
widths 16..128, batch 4, the paper's loss weights. VGG-16 weights are random unless
--config.vgg.weights points at a converted file (see README), so the perceptual and style
terms only regularise. About 3 minutes on 2 CPU cores (7 images/s); the hole loss (logged as
the mean over 10 steps) falls from ~0.29 to ~0.09 and the last grid in runs/demo/samples/ shows
the holes filled with plausible local colour and texture.
"""

from pconv_jax.model import UNetConfig
from pconv_jax.train import default_config, model_settings


def get_config():
    config = default_config()
    config.data.source = "samples"
    config.data.image_size = 96
    config.data.scale_range = (0.3, 0.8)
    config.model.update(model_settings(UNetConfig.tiny(depth=5, width=16, image_size=96)))
    config.train.batch_size = 4
    config.train.steps = 300
    config.train.log_every = 10
    config.train.image_every = 100
    config.optim.lr = 1e-3
    config.checkpoint.every_steps = 100
    config.checkpoint.keep = 2
    return config
