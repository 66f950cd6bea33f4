"""Distill a dataset: ``accelerate launch recipes/distill.py --config <name or file.yaml> [--key value ...]``.

Any config key can be overridden on the command line (``--output_dir runs/x --seed 1 --krr_st.outer_steps 100``);
``--resume`` continues from the newest checkpoint in ``output_dir``. Same as ``hf-ssdd distill``.
"""

import sys

from hf_ssdd.config import parse_config
from hf_ssdd.distill.run import DistillRunConfig, run_distillation

if __name__ == "__main__":
    run_distillation(parse_config(DistillRunConfig, sys.argv[1:]))
