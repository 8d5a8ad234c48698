"""CelebA-HQ at 256 px: depth 7 (one 512-wide level fewer), batch 6, the paper's schedule.

    python -m pconv_jax.train --config experiments/configs/celeba_hq.py \
        --workdir runs/celeba_hq --config.vgg.weights=weights/vgg16.safetensors

celeb_a_hq needs a manual download into ~/tensorflow_datasets/downloads/manual and
`tfds build celeb_a_hq/256 --file_format=array_record`; an image folder works as well
(--config.data.source=/path/to/celeba_hq). Phase 2 (frozen encoder BatchNorm, 5e-5) starts at
step 300k, ending at 500k.
"""

from pconv_jax.config import default_config, model_settings
from pconv_jax.model import UNetConfig


def get_config():
    config = default_config()
    config.data.source = "tfds:celeb_a_hq/256/train"
    config.data.image_size = 256
    config.model.update(model_settings(UNetConfig.paper_256()))
    config.train.batch_size = 6
    # bfloat16 convolutions (UNet and VGG-16) with float32 masks, Gram accumulation, loss,
    # gradients and parameters: the choice on GPUs and TPUs. On a CPU without bfloat16 units,
    # --config.train.compute_dtype=float32 is faster (BENCHMARKS.md).
    config.train.compute_dtype = "bfloat16"
    config.train.steps = 500_000
    config.train.finetune_step = 300_000
    return config
