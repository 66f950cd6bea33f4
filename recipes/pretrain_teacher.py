"""Train a Barlow Twins teacher: ``accelerate launch recipes/pretrain_teacher.py [--config FILE] [--key value ...]``.

Same as ``hf-ssdd pretrain-teacher``; ``--resume`` continues from the newest checkpoint in ``output_dir``.
"""

import sys

from hf_ssdd.config import parse_config
from hf_ssdd.ssl.train import TeacherTrainConfig, train_teacher

if __name__ == "__main__":
    train_teacher(parse_config(TeacherTrainConfig, sys.argv[1:]))
