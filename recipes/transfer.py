"""Transfer evaluation: ``python recipes/transfer.py --distilled_sets "[KRR-ST=runs/distill/distilled]" [--key value ...]``.

Linear probe (MKDT), full fine-tuning (KRR-ST), kNN and (with ``--teacher``) teacher fidelity of encoders and
distilled sets on target datasets, with a "No pre-training" row; writes ``results.{json,md,png}`` to
``--output_dir``. Same as ``hf-ssdd transfer``.
"""

import sys

from hf_ssdd.config import parse_config
from hf_ssdd.transfer.run import TransferConfig, run_transfer

if __name__ == "__main__":
    run_transfer(parse_config(TransferConfig, sys.argv[1:]))
