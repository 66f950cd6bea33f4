"""Pre-train an encoder on a distilled set: ``python recipes/pretrain_student.py --distilled_set DIR [--key value ...]``.

Same as ``hf-ssdd pretrain``; ``--recipe krr_st|mkdt`` picks the reference recipe (default: the set's own).
"""

import sys

from hf_ssdd.config import parse_config
from hf_ssdd.pretrain import PretrainConfig, run_pretrain

if __name__ == "__main__":
    run_pretrain(parse_config(PretrainConfig, sys.argv[1:]))
