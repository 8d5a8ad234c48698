"""One hour of a 2-core CPU: the best PConv UNet this repository trains without an accelerator.

    python -m pconv_jax.train --config experiments/configs/cpu_hour.py --workdir runs/cpu_hour
    make cpu-hour     # the same, set-up included, then its table on photos it never saw

Trained only on the twelve photos bundled with scikit-image that the demo uses (four colour,
eight grey); `chelsea` and `coffee` are held out for the curve (every EVAL_EVERY steps,
`eval_psnr` against Telea's `eval_psnr_telea` in metrics.jsonl), and the evaluation photos
(EVALUATION_PHOTOS, skimage's stereo motorcycle pair) are seen neither in training nor in the
choice of these settings. Every choice below was made from held-out curves at equal minutes:
experiments/README.md, "One CPU hour (issue #22)". VGG-16 terms stay off without a weight file.

MEASURED: filled in from the run (processor, minutes) in experiments/README.md.
It is a normal run: stopped (Ctrl-C, SIGTERM) it saves, and the same command resumes it.
"""

from pconv_jax.model import UNetConfig
from pconv_jax.train import default_config, model_settings

TRAIN_PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field",
                "camera", "coins", "moon", "clock", "brick", "grass", "gravel", "cell")
HELD_OUT = ("chelsea", "coffee")  # the curve's photos: they steered the choices below
EVALUATION_PHOTOS = ("motorcycle_left", "motorcycle_right")  # the table's: never used before
IMAGE_SIZE = 128
STEPS = 24000
EVAL_EVERY = 1000


def get_config():
    config = default_config()
    config.data.source = "samples:" + ",".join(TRAIN_PHOTOS)
    config.data.eval_source = "samples:" + ",".join(HELD_OUT)
    config.data.eval_pairs = 24
    config.data.image_size = IMAGE_SIZE
    config.data.scale_range = (1.0, 3.0)
    config.data.colour_jitter = 0.5
    config.model.update(model_settings(UNetConfig.tiny(depth=6, width=32,
                                                       image_size=IMAGE_SIZE)))
    config.train.batch_size = 4
    config.train.steps = STEPS
    config.train.log_every = 100
    config.train.image_every = 5000
    config.train.eval_every = EVAL_EVERY
    config.optim.lr = 1e-3
    config.optim.schedule = "cosine"
    config.loss.weights.tv = 0.5  # the paper's 0.1 x 5
    config.checkpoint.every_steps = 2000
    config.checkpoint.keep = 2
    config.vgg.fallback = "off"
    return config
