"""ResNet-20 W4A4 on CIFAR-10 trained with ODG-Q's default (configs/cifar10_resnet20_w4a4_odgq.py)
for as many updates as fit in the wall time of FGSM-RS's 10 epochs.

An ODG-Q update with the fresh step on 9 of every 16 examples takes 1.33x natural training's wall
time, an FGSM-RS update 1.54x (results/benchmarks/step_cost.json, measured in one run with nothing
else running), so in FGSM-RS's time ODG-Q makes 1.54 / 1.33 = 1.163x as many updates: 11.63 epochs
of updates, 4,535 at batch 128. The learning-rate schedule and the eps warm-up span the longer run
as they span the default's.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_odgq_equal_time.py --workdir runs/cifar10_resnet20_w4a4_odgq_equal_time

tests/test_configs.py checks that the epochs follow from the step-cost record.
"""
from configs import cifar10_resnet20_w4a4_odgq

FGSM_RS_EPOCHS = 10
# seconds per update, FGSM-RS over ODG-Q, in results/benchmarks/step_cost.json
WALL_TIME_RATIO_FGSM_RS_TO_ODGQ = 1.163


def get_config():
  config = cifar10_resnet20_w4a4_odgq.get_config()
  config.num_epochs = round(FGSM_RS_EPOCHS * WALL_TIME_RATIO_FGSM_RS_TO_ODGQ, 2)
  return config
