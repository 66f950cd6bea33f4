"""Client scripts for the Hub publishing tests, each run in a fresh process: ``python hub_clients.py S WORK``.

Scenario ``S`` reads ``WORK/S.args.json`` (and ``WORK/inputs.safetensors``) and writes ``WORK/S.json`` and,
where it has tensors, ``WORK/S.safetensors``. The ``consume`` scenario runs
with hf_ssdd blocked: it is what a user without the library does. Fresh processes matter because
``huggingface_hub.constants`` read ``HF_ENDPOINT`` and the offline flags at import.
"""

import json
import sys
from pathlib import Path


def _card(ref: str) -> str:
    """What ``Card.load`` takes: a local folder's README, or the repo id itself."""
    return f"{ref}/README.md" if Path(ref).is_dir() else ref


def consume(work: Path, args: dict) -> dict:
    """Load a published set and encoders with datasets / transformers / timm only (hf_ssdd blocked)."""
    sys.modules["hf_ssdd"] = None  # importing it fails even where it is installed (CI's editable install)
    try:
        import hf_ssdd  # noqa: F401

        importable = True
    except ImportError:
        importable = False
    import timm
    import torch
    from datasets import load_dataset
    from huggingface_hub import DatasetCard, ModelCard
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    x = load_file(work / "inputs.safetensors")["x"]
    ds = load_dataset(args["dataset"], split="train").with_format("torch")
    batch = ds[:]
    streamed = list(load_dataset(args["dataset"], split="train", streaming=True).with_format("torch"))
    try:
        AutoModel.from_pretrained(args["custom"])
        refused = ""
    except ValueError as error:
        refused = str(error)
    custom = AutoModel.from_pretrained(args["custom"], trust_remote_code=True).eval()
    with torch.no_grad():
        tensors = {
            "pixel_values": batch["pixel_values"],
            "target": batch["target"],
            "streamed_pixel_values": torch.stack([row["pixel_values"] for row in streamed]),
            "custom": custom(x).pooler_output,
            "timm_auto": AutoModel.from_pretrained(args["timm"]).eval()(x).pooler_output,
            "timm": timm.create_model(args["timm_prefix"] + args["timm"], pretrained=True).eval()(x),
        }
    save_file({k: v.contiguous() for k, v in tensors.items()}, work / "consume.safetensors")
    return {
        "hf_ssdd_importable": importable,
        "custom_module": type(custom).__module__,
        "refused": refused,
        "columns": ds.column_names,
        "dataset_card": DatasetCard.load(_card(args["dataset"]), repo_type="dataset").data.to_dict(),
        "custom_card": ModelCard.load(_card(args["custom"])).data.to_dict(),
        "timm_card": ModelCard.load(_card(args["timm"])).data.to_dict(),
    }


def publish(work: Path, args: dict) -> dict:
    """``hf-ssdd push`` of a run plus ``push_encoder`` of a timm encoder, then load both back with hf_ssdd."""
    import torch
    from safetensors.torch import load_file, save_file

    from hf_ssdd.artifacts.distilled_set import DistilledSet
    from hf_ssdd.cli import main
    from hf_ssdd.hub import load_encoder, push_encoder

    main(["push", args["run"], args["repo"], "--private"])
    timm_commit = push_encoder(
        args["timm_encoder"],
        args["timm_repo"],
        results=args["results"],
        results_encoder="timm",
        distilled_set_repo=args["repo"],
    )
    dset = DistilledSet.from_pretrained(args["repo"])
    x = load_file(work / "inputs.safetensors")["x"]
    with torch.no_grad():
        tensors = {
            "images": dset.images,
            "targets": dset.targets,
            "custom": load_encoder(args["repo"] + "-convnet")(x).pooler_output,
            "timm": load_encoder(args["timm_repo"])(x).pooler_output,
        }
    save_file(tensors, work / "publish.safetensors")
    return {"meta": dset.meta, "timm_commit_url": timm_commit.commit_url}


def flaky(work: Path, args: dict) -> dict:
    """Push a run while the server fails the first commit, then retry."""
    from hf_ssdd.cli import main

    try:
        main(["push", args["run"], args["repo"]])
        first = ""
    except SystemExit as error:
        first = str(error)
    return {"first": first, "second": main(["push", args["run"], args["repo"]])}


def schema(work: Path, args: dict) -> dict:
    """Push a set, refuse one with other columns, replace it when asked, and push to a branch."""
    from hub_testing import make_set
    from huggingface_hub import HfApi

    from hf_ssdd.artifacts.distilled_set import DistilledSet
    from hf_ssdd.hub import SchemaMismatchError

    api, repo = HfApi(), args["repo"]
    make_set(target_dim=4).push_to_hub(repo)
    api.upload_file(
        path_or_fileobj=b"stale",
        path_in_repo="data/train-00001-of-00002.parquet",
        repo_id=repo,
        repo_type="dataset",
    )
    make_set(target_dim=4, seed=1).push_to_hub(repo)  # same columns: accepted, stale shard deleted
    files_same = api.list_repo_files(repo, repo_type="dataset")
    sha = api.dataset_info(repo).sha
    try:
        make_set(target_dim=6).push_to_hub(repo)
        refused = ""
    except SchemaMismatchError as error:
        refused = str(error)
    unchanged = api.dataset_info(repo).sha == sha
    make_set(target_dim=6).push_to_hub(repo, overwrite_schema=True)
    make_set(target_dim=5).push_to_hub(repo, revision="dev", overwrite_schema=True)
    foreign = api.create_repo(f"{repo}-foreign", repo_type="dataset").repo_id
    api.upload_file(path_or_fileobj=b"x", path_in_repo="train.parquet", repo_id=foreign, repo_type="dataset")
    try:
        make_set().push_to_hub(foreign)
        refused_foreign = ""
    except SchemaMismatchError as error:
        refused_foreign = str(error)
    return {
        "refused_foreign": refused_foreign,
        "files_after_same_schema_push": files_same,
        "refused": refused,
        "unchanged_after_refusal": unchanged,
        "main_target_dim": DistilledSet.from_pretrained(repo).target_dim,
        "dev_target_dim": DistilledSet.from_pretrained(repo, revision="dev").target_dim,
    }


def live(work: Path, args: dict) -> dict:
    """``push_run`` to private throwaway repos on huggingface.co, load back, always delete the repos."""
    import uuid

    from huggingface_hub import HfApi

    api = HfApi()
    repo = f"{api.whoami()['name']}/hf-ssdd-test-{uuid.uuid4().hex[:8]}"
    repos = [(repo, "dataset"), (f"{repo}-convnet", "model")]
    try:
        report = _live_round_trip(api, Path(args["run"]), repos)
    finally:
        for repo_id, repo_type in repos:
            api.delete_repo(repo_id, repo_type=repo_type, missing_ok=True)
    return {**report, "still_exists": [api.repo_exists(r, repo_type=t) for r, t in repos]}


def _live_round_trip(api, run: Path, repos: list) -> dict:
    import torch
    from datasets import load_dataset

    from hf_ssdd.artifacts.distilled_set import DistilledSet
    from hf_ssdd.hub import load_encoder, push_run

    push_run(run, repos[0][0], private=True)
    local, hub = DistilledSet.load(run / "distilled"), DistilledSet.from_pretrained(repos[0][0])
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        encoders = [load_encoder(ref)(x).pooler_output for ref in (run / "encoder", repos[1][0])]
    return {
        "private": [api.repo_info(r, repo_type=t).private for r, t in repos],
        "set_equal": torch.equal(local.images, hub.images) and torch.equal(local.targets, hub.targets),
        "encoder_equal": torch.equal(*encoders),
        "load_dataset_rows": load_dataset(repos[0][0], split="train").num_rows,
    }


def installed(work: Path, args: dict) -> dict:
    """From an installed copy of hf_ssdd (no checkout): render both cards (templates shipped as package data), run
    ``hf-ssdd configs`` and ``hf-ssdd distill --config quickstart --help``, load the shipped teacher."""
    import contextlib
    import io

    import hf_ssdd
    from hf_ssdd.artifacts.cards import model_card, template_path
    from hf_ssdd.artifacts.distilled_set import DistilledSet
    from hf_ssdd.assets import embedded_path
    from hf_ssdd.cli import main
    from hf_ssdd.teachers import Teacher

    outputs = {}
    for name, argv in (("configs", ["configs"]), ("help", ["distill", "--config", "quickstart", "--help"])):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            outputs[f"{name}_rc"] = main(argv)
        outputs[name] = out.getvalue()
    teacher = Teacher.from_pretrained("embedded:teacher-cpu-c10")

    dset = DistilledSet.load(args["dataset_folder"])
    folder = dset.save(work / "installed_set", repo_id="org/installed")
    encoder = {
        "role": "encoder",
        "format": "transformers",
        "architecture": "ssdd_convnet",
        "num_features": 32,
    }
    card = model_card({**encoder, "image_size": 8, "mean": None, "std": None}, "org/installed-convnet")
    return {
        "package": hf_ssdd.__file__,
        "templates": [str(template_path(name)) for name in ("dataset_card.md", "model_card.md")],
        "dataset_card": (folder / "README.md").read_text(),
        "model_card": str(card),
        **outputs,
        "teacher": [str(embedded_path("teacher-cpu-c10")), teacher.feature_dim],
    }


if __name__ == "__main__":
    scenario, work_dir = sys.argv[1], Path(sys.argv[2])
    arguments = json.loads((work_dir / f"{scenario}.args.json").read_text())
    report = globals()[scenario](work_dir, arguments)
    (work_dir / f"{scenario}.json").write_text(json.dumps(report, indent=2, default=str))
