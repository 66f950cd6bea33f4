"""Publish a finished run: ``python recipes/push.py --run_dir runs/quickstart --repo_id org/cifar10-krrst``.

The distilled set goes to the dataset repo ``--repo_id``, the run's encoder (if any) to a model repo
(``--encoder_repo``, default ``<repo_id>-<architecture>``), one commit each. Same as
``hf-ssdd push RUN_DIR REPO_ID``.
"""

import sys

from hf_ssdd.config import parse_config
from hf_ssdd.hub import PushConfig, run_push

if __name__ == "__main__":
    run_push(parse_config(PushConfig, sys.argv[1:]))
