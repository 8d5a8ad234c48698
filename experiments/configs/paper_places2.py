"""The paper's Places2 run: 512 px, depth 8, batch 6, Adam 2e-4, then fine-tuning at 5e-5.

    python -m pconv_jax.train --config experiments/configs/paper_places2.py \
        --workdir runs/places2 --config.vgg.weights=weights/vgg16.safetensors

Needs places365_small prepared in ArrayRecord format (`tfds build places365_small
--file_format=array_record`; its images are 256 px, upsampled to 512 as in public
reproductions) and ImageNet VGG-16 weights. Phase 1 runs 800k steps at 2e-4 with BatchNorm
learning everywhere; phase 2 (steps 800k-1.3M) freezes the encoder's BatchNorm and uses 5e-5,
as public reproductions do. Use --config.data.masks=DIR for NVIDIA's irregular mask set
(white = hole); generated irregular masks otherwise. Expect days on one accelerator; the
paper reports 28.3 dB PSNR / 0.87 SSIM / 1.09% l1 on (0.1,0.2] holes.
"""

from pconv_jax.config import default_config


def get_config():
    config = default_config()  # the paper's model, loss weights and optimizer
    config.data.source = "tfds:places365_small/train"
    config.data.image_size = 512
    config.train.batch_size = 6
    # bfloat16 convolutions (UNet and VGG-16) with float32 masks, Gram accumulation, loss,
    # gradients and parameters: the choice on GPUs and TPUs. On a CPU without bfloat16 units,
    # --config.train.compute_dtype=float32 is faster (BENCHMARKS.md).
    config.train.compute_dtype = "bfloat16"
    config.train.steps = 1_300_000
    config.train.finetune_step = 800_000
    config.train.log_every = 100
    config.train.image_every = 5000
    config.checkpoint.every_steps = 5000
    return config
