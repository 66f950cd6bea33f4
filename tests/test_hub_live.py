"""Hub publishing, layer 3: a live round trip on huggingface.co. Opt-in: runs only when ``HF_SSDD_HUB_TOKEN``
holds a token with write access, and is reported as skipped otherwise.

It publishes a tiny finished run (``push_run``) to private throwaway repos under the token's account, loads
the set and the encoder back, and deletes the repos whatever happens. Uploads go through the real Hub's
protocol (Xet when hf_xet is installed), which the loopback fake of layer 2 does not speak.
"""

import os

import pytest
from hub_testing import make_run, run_client

pytestmark = [
    pytest.mark.hub,
    pytest.mark.skipif(
        not os.environ.get("HF_SSDD_HUB_TOKEN"),
        reason="live Hub test: set HF_SSDD_HUB_TOKEN to a token with write access to run it",
    ),
]


def test_live_push_and_load_round_trip(tmp_path):
    run = make_run(tmp_path / "run", evaluated="distilled")
    env = {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_TOKEN": os.environ["HF_SSDD_HUB_TOKEN"]}
    report = run_client("live", tmp_path, {"run": str(run)}, env)
    assert report["private"] == [True, True]
    assert report["set_equal"] and report["encoder_equal"] and report["load_dataset_rows"] == 6
    assert report["still_exists"] == [False, False]
