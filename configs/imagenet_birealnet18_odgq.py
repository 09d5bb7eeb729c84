"""Bi-Real Net-18 (binary) on ImageNet trained with ODG-Q, eps 4/255, in bfloat16 on 8 accelerators.

Bi-Real Net-18 (Liu et al. 2018; odgq_jax/models/bireal.py): ResNet-18's 16 hidden 3x3 convs, each
binary (sign activations with the ApproxSign gradient, sign weights with the XNOR-Net
per-output-channel scale) inside its own real-valued shortcut; first conv and classifier at 8 bits
(`default.binarize_model`). ReActNet's options by override:
--config.model.act_quantizer.learnable_threshold=True (RSign), --config.model.rprelu=True
(RPReLU). The ImageNet recipe of `default.imagenet` (global batch 1024, peak learning rate 0.4 =
0.1 per 256 images, 16 epochs of updates, random-resized crops at 224x224, bfloat16 compute) and
ODG-Q at eps 4/255 (`default.imagenet_odgq_method`). The natural counterpart is the variant after
the colon: `--config configs/imagenet_birealnet18_odgq.py:natural`.

On a TPU v4-8 or a host with 8 GPUs (prepare TFDS imagenet2012 first; --config.data_dir=DIR if it
is not in TFDS's default directory):

  python launch/train.py --config configs/imagenet_birealnet18_odgq.py --workdir runs/imagenet_birealnet18_odgq
  python launch/eval.py --checkpoint runs/imagenet_birealnet18_odgq --split validation --eps 0.01568627 --output results/imagenet_birealnet18_odgq/report.json

(--eps is 4/255; the robust-versus-eps curve includes 2/255; PGD++ runs too, the model being
binary.) On a multi-host slice, run the first command on every host with --distributed.

Cost, from the compiled train step's FLOPs (benchmarks/throughput.py, XLA:CPU's count at 224x224 and
batch 1024; results/benchmarks/throughput_cpu.json): 16.0 GFLOPs per image per update (1.38x natural
training's 11.6), so 3.3e17 FLOPs for the 16 epochs of updates (2.4e17 natural). At the FLOP rate
the flax ImageNet example reached with ResNet-50 on 8 V100s (mixed precision, about 890 images/s per
GPU), that is about 0.45 h (0.32 h natural): an estimate, not a measurement, and a low one, since
the quantizers' elementwise work is bound by memory rather than FLOPs.
"""
from configs import default


def get_config(variant="odgq"):
  config = default.imagenet(default.binarize_model(default.get_config(), "birealnet18"))
  return default.imagenet_variant(config, variant)
