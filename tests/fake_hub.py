"""A loopback STAND-IN for the Hugging Face Hub, for offline integration tests. It is NOT the Hub.

An in-memory ``http.server.ThreadingHTTPServer`` on 127.0.0.1 that speaks the subset of the Hub HTTP API that
huggingface_hub 2.4, datasets 5.2, transformers 5.23 and timm 1.0.31 call to create repos, upload (LFS "basic"
transfer), commit, list, and download files with ``Range`` requests (``hf_integration.md`` §3.3). Point
clients at it with :meth:`FakeHub.client_env` (``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET=1``: hf_xet would
otherwise upload through the Xet protocol, which the fake does not speak). ``huggingface_hub.constants`` read
the environment at import, so clients run in fresh subprocesses.

It does not check auth, permissions, card YAML (``/api/validate-yaml`` accepts everything), pull requests,
rate limits or parent-commit races, and it mimics an internal protocol that changes between releases. A
passing test shows that hf_ssdd drives the client libraries correctly, not that the real Hub accepts the
upload.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".png")
_API = re.compile(
    r"^/api/(model|dataset)s/([^/]+/[^/]+)(?:/(revision|tree|preupload|commit|branch)(?:/(.*))?)?$"
)
_RESOLVE = re.compile(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH = re.compile(r"^/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")


@dataclass
class Repo:
    """Commits (sha -> {path: bytes}) and branches (name -> sha)."""

    url: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def files(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        sha = self.branches.get(revision, revision)
        return (sha, self.commits[sha]) if sha in self.commits else None


class FakeHub:
    """The fake server. ``fail_next_commits = n`` answers the next n commit requests with HTTP 500."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.fail_next_commits = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def client_env(self) -> dict[str, str]:
        """Environment for a client process that talks to this fake."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_TOKEN": "hf_fake",
        }

    def repo_files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Files of a repo at a revision (for assertions)."""
        return dict(self.repos[(repo_type, repo_id)].files(revision)[1])

    def commit(self, repo: Repo, revision: str, ops: list[dict]) -> str | None:
        """Apply one NDJSON commit to a branch; returns the new sha, or None if an LFS blob is missing."""
        sha, files = repo.files(revision) or (None, {})
        files = dict(files)
        for op in ops:
            key, value = op["key"], op["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.blobs:
                    return None
                files[value["path"]] = self.blobs[value["oid"]]
            elif key == "deletedFile":
                files.pop(value["path"], None)
        new_sha = hashlib.sha1(f"{sha}{len(repo.commits)}{sorted(files)}".encode()).hexdigest()
        repo.commits[new_sha] = files
        repo.branches[revision] = new_sha
        return new_sha


def _entry(path: str, files: dict[str, bytes]) -> dict:
    if path in files:
        data = files[path]
        entry = {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
        if path.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
        return entry
    return {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(path.encode()).hexdigest()}


def _tree(files: dict[str, bytes], root: str, recursive: bool) -> list[dict] | None:
    prefix = f"{root}/" if root else ""
    below = [p for p in files if p.startswith(prefix)]
    if root and not below:
        return None
    paths: set[str] = set()
    for path in below:
        parts = path[len(prefix) :].split("/")
        depth = len(parts) if recursive else 1
        paths.update(prefix + "/".join(parts[: i + 1]) for i in range(min(depth, len(parts))))
    return [_entry(p, files) for p in sorted(paths)]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: object = b"", headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
            repo = hub.repos.get((repo_type, repo_id))
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return repo

        def _files(self, repo: Repo, revision: str) -> tuple[str, dict[str, bytes]] | None:
            found = repo.files(unquote(revision))
            if found is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return found

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            if match := _RESOLVE.match(path):
                return self._resolve(match)
            if not (match := _API.match(path)) or match[3] not in (None, "revision", "tree"):
                return self._error(404, "EntryNotFound", f"no route {path}")
            repo_type, repo_id, action, rest = match.groups()
            if (repo := self._repo(repo_type, repo_id)) is None:
                return
            revision, _, sub = (rest or "main").partition("/")
            if (found := self._files(repo, revision)) is None:
                return
            sha, files = found
            if action == "tree":
                tree = _tree(files, sub.strip("/"), query.get("recursive", ["false"])[0].lower() == "true")
                if tree is None:
                    return self._error(404, "EntryNotFound", f"{sub} does not exist")
                return self._send(200, tree)
            siblings = [{"rfilename": p, "size": len(b)} for p, b in sorted(files.items())]
            info = {"id": repo_id, "sha": sha, "private": repo.private, "siblings": siblings, "tags": []}
            self._send(200, {**info, "lastModified": "2024-01-01T00:00:00.000Z", "cardData": {}})

        def _resolve(self, match: re.Match) -> None:
            repo = self._repo("dataset" if match[1] else "model", match[2])
            if repo is None or (found := self._files(repo, match[3])) is None:
                return
            sha, files = found
            if (data := files.get(match[4])) is None:
                return self._error(404, "EntryNotFound", f"{match[4]} does not exist")
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            headers = {"X-Repo-Commit": sha, "ETag": etag, "Accept-Ranges": "bytes"}
            if ranged := re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
                start = int(ranged[1])
                end = min(int(ranged[2]) if ranged[2] else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(206, data[start : end + 1], headers)
            self._send(200, data, headers)

        def do_PUT(self) -> None:
            oid, data = self.path.rsplit("/", 1)[-1], self._body()
            if not self.path.startswith("/lfs-upload/") or hashlib.sha256(data).hexdigest() != oid:
                return self._error(400, "BadRequest", "unknown upload or sha256 mismatch")
            with hub.lock:
                hub.blobs[oid] = data
            self._send(200, {})

        def do_POST(self) -> None:
            path, body = unquote(urlsplit(self.path).path), self._body()
            if path == "/api/validate-yaml":
                return self._send(200, {"errors": [], "warnings": []})
            if path == "/api/repos/create":
                return self._create(json.loads(body))
            if _LFS_BATCH.match(path):
                objects = [self._lfs_object(o) for o in json.loads(body)["objects"]]
                return self._send(200, {"transfer": "basic", "objects": objects})
            if not (match := _API.match(path)) or match[3] not in ("preupload", "commit", "branch"):
                return self._error(404, "EntryNotFound", f"no route {path}")
            repo_type, repo_id, action, revision = match.groups()
            if (repo := self._repo(repo_type, repo_id)) is None:
                return
            with hub.lock:
                getattr(self, f"_{action}")(repo, revision, body)

        def _lfs_object(self, obj: dict) -> dict:
            """A batch answer: an upload action, or none when the blob is already stored."""
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in hub.blobs:
                answer["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
            return answer

        def _create(self, payload: dict) -> None:
            repo_id = "/".join(filter(None, [payload.get("organization"), payload["name"]]))
            repo_type = payload.get("type") or "model"
            url = f"{hub.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
            with hub.lock:
                if (repo_type, repo_id) in hub.repos:
                    return self._send(409, {"error": "You already created this repo", "url": url})
                repo = hub.repos[(repo_type, repo_id)] = Repo(url, payload.get("visibility") == "private")
                hub.commit(
                    repo, "main", [{"key": "file", "value": {"path": ".gitattributes", "content": ""}}]
                )
            self._send(200, {"url": url, "name": repo_id})

        def _preupload(self, repo: Repo, revision: str, body: bytes) -> None:
            paths = [f["path"] for f in json.loads(body)["files"]]
            modes = [
                {"path": p, "uploadMode": "lfs" if p.endswith(LFS_SUFFIXES) else "regular"} for p in paths
            ]
            self._send(200, {"files": [{**mode, "shouldIgnore": False} for mode in modes]})

        def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
            if hub.fail_next_commits > 0:
                hub.fail_next_commits -= 1
                return self._error(500, "InternalError", "injected failure")
            sha = hub.commit(repo, revision, [json.loads(line) for line in body.splitlines() if line.strip()])
            if sha is None:
                return self._error(422, "LfsObjectMissing", "an LFS object was not uploaded")
            url = f"{repo.url}/commit/{sha}"
            self._send(200, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None})

        def _branch(self, repo: Repo, branch: str, body: bytes) -> None:
            if branch in repo.branches:
                return self._error(409, "Conflict", f"branch {branch} exists")
            repo.branches[branch] = repo.branches["main"]
            self._send(200, {})

    return Handler
