"""Train MKDT's experts: ``accelerate launch recipes/train_experts.py --config <mkdt config>``.

Takes the same config as ``recipes/distill.py`` (set ``--teacher``); writes the expert trajectories to
``mkdt.experts.directory`` (else ``<output_dir>/experts``), skipping experts already there, one expert per process
at a time. A later ``distill`` run with the same config finds and uses them. Same as ``hf-ssdd train-experts``.
"""

import sys

from hf_ssdd.config import parse_config
from hf_ssdd.distill.run import DistillRunConfig, run_expert_training

if __name__ == "__main__":
    run_expert_training(parse_config(DistillRunConfig, sys.argv[1:]))
