"""Binary ResNet-20 on CIFAR-10, natural training: the reference for its ODG-Q counterpart.

Bi-Real Net's structure (odgq_jax/models/bireal.py): ResNet-20's 18 hidden 3x3 convs, each binary
(sign of the activations with the ApproxSign gradient, sign of the weights with the XNOR-Net
per-output-channel scale) inside its own real-valued shortcut; first conv and classifier at 8 bits.
ReActNet's options by override: --config.model.act_quantizer.learnable_threshold=True (RSign)
and --config.model.rprelu=True (RPReLU). Natural training's recipe (R2, configs/default.py).

  python launch/train.py --config configs/cifar10_resnet20_binary.py --workdir runs/cifar10_resnet20_binary

Evaluated with PGD++ among the white-box attacks (a binary model, `odgq_jax.models.is_binary`):

  python launch/eval.py --checkpoint runs/cifar10_resnet20_binary --protocol quick --substitute fp=results/substitute_fp/export --substitute arch=results/substitute_arch/export --substitute low_bit=results/substitute_low_bit/export --output results/cifar10_resnet20_binary/report.json

70.99% clean test accuracy after 10 epochs; worst case 0.0% under the quick protocol
(results/cifar10_resnet20_binary/).
"""
from configs import default


def get_config():
  return default.binarize_model(default.get_config(), "binary_resnet20")
