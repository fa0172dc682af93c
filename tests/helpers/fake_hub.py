"""A fake Hugging Face Hub on 127.0.0.1: the endpoints `huggingface_hub` calls to check a token, create a
repository, check write access, create a branch, validate a card's metadata, open a pull request, and commit files
(preupload, then the NDJSON commit with the files inline). It keeps what it receives, so tests can read the pushed files back.

    with FakeHub(tokens={"good-token": "tester"}) as hub:
        HfApi(endpoint=hub.endpoint, token="good-token").create_repo("tester/model")
        hub.repos["tester/model"]["main"]  # {path: bytes}
"""

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml
from huggingface_hub.repocard_data import model_index_to_eval_results

# A part of the Hub's task list (huggingface.js `PIPELINE_DATA`): enough to reject a made-up pipeline tag.
PIPELINE_TAGS = {
    "video-classification", "zero-shot-image-classification", "feature-extraction", "text-to-video",
    "image-classification", "zero-shot-classification", "sentence-similarity", "video-text-to-text",
}


def gitignore_matcher(content: str):
    """What the Hub does with the `gitIgnore` of a pre-upload request, for the patterns a published folder uses:
    `name/` ignores a folder at any depth, other lines are globs on the file name or, with a slash, on the path."""
    import fnmatch

    patterns = [line.strip() for line in content.splitlines() if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        for pattern in patterns:
            if pattern.endswith("/"):
                if pattern[:-1] in parts[:-1]:
                    return True
            elif "/" in pattern.strip("/"):
                if fnmatch.fnmatch(path, pattern.strip("/")):
                    return True
            elif fnmatch.fnmatch(parts[-1], pattern.lstrip("/")):
                return True
        return False

    return ignored


def validate_card_metadata(content: str) -> list[str]:
    """The checks of the Hub's `/api/validate-yaml` that matter for a model card: front matter that is a YAML
    mapping, a known pipeline tag, string-or-list fields of the right type, and a `model-index` that parses into
    results with numeric values."""
    match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.DOTALL)
    if not match:
        return []  # the Hub accepts a card without metadata (with a warning)
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as error:
        return [f"invalid YAML: {error}"]
    if not isinstance(metadata, dict):
        return ["the metadata is not a mapping"]
    errors = []
    if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f"\"pipeline_tag\" must be a valid pipeline, got {metadata['pipeline_tag']!r}")
    for field in ("license", "library_name", "base_model"):
        if field in metadata and not isinstance(metadata[field], (str, list)):
            errors.append(f"\"{field}\" must be a string or a list of strings")
    for field in ("language", "datasets", "tags"):
        if field in metadata and not (isinstance(metadata[field], list) and all(isinstance(v, str) for v in metadata[field])):
            errors.append(f"\"{field}\" must be a list of strings")
    if "model-index" in metadata:
        try:
            _, results = model_index_to_eval_results(metadata["model-index"])
            if not results or not all(isinstance(result.metric_value, (int, float)) for result in results):
                errors.append('"model-index" has no numeric results')
        except (KeyError, TypeError, ValueError) as error:
            errors.append(f'"model-index" is malformed: {error!r}')
    return errors


class FakeHub:
    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens  # token -> user name
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo id -> branch -> path -> content
        self.private: dict[str, bool] = {}
        self.commits: list[dict] = []  # {"repo", "revision", "summary", "description", "files", "create_pr"}
        self.requests: list[str] = []
        self.pull_requests: list[dict] = []
        self.validated: list[str] = []  # the README.md contents sent to /api/validate-yaml  # what each pull request was opened with
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _user(self):
                header = self.headers.get("Authorization", "")
                token = header.removeprefix("Bearer ").strip()
                return hub.tokens.get(token)

            def _reply(self, status: int, body=None, headers=None):
                data = json.dumps(body if body is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, code: str | None = None):
                self._reply(status, {"error": message}, {"X-Error-Code": code} if code else None)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _owned(self, repo: str, user: str) -> bool:
                return repo.split("/")[0] == user

            def do_GET(self):
                hub.requests.append(f"GET {self.path}")
                user = self._user()
                if self.path == "/api/whoami-v2":
                    if user is None:
                        return self._error(401, "Invalid credentials in Authorization header")
                    return self._reply(200, {"type": "user", "name": user, "auth": {"accessToken": {"role": "write"}}})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/discussions/(\d+)", self.path.partition("?")[0])
                if match and match.group(1) in hub.repos:
                    return self._reply(200, {
                        "title": "pull request", "num": int(match.group(2)), "author": {"name": user},
                        "createdAt": "2026-01-01T00:00:00.000Z", "status": "draft",
                        "repo": {"name": match.group(1), "type": "model"}, "isPullRequest": True, "events": [],
                        "changes": {"base": "refs/heads/main"}, "filesWithConflicts": [],
                    })
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/auth-check(/write)?", self.path)
                if match:
                    repo = match.group(1)
                    if repo not in hub.repos:
                        return self._error(404, "Repository not found", "RepoNotFound")
                    if match.group(2) and (user is None or not self._owned(repo, user)):
                        return self._error(403, "You don't have write access", None)
                    return self._reply(200, {})
                return self._error(404, f"fake hub: no route GET {self.path}")

            def do_POST(self):
                hub.requests.append(f"POST {self.path}")
                user = self._user()
                body = self._body()
                if self.path == "/api/validate-yaml":
                    content = json.loads(body)["content"]
                    hub.validated.append(content)
                    errors = validate_card_metadata(content)
                    if errors:
                        return self._reply(400, {"errors": [{"message": error} for error in errors]})
                    return self._reply(200, {"warnings": []})
                if user is None:
                    return self._error(401, "Invalid credentials in Authorization header")
                if self.path == "/api/repos/create":
                    payload = json.loads(body)
                    repo = f"{payload.get('organization') or user}/{payload['name']}"
                    if not self._owned(repo, user):
                        return self._error(403, f"You don't have the rights to create a model under {repo.split('/')[0]}")
                    if repo in hub.repos:  # the Hub's 409 names the existing repository
                        return self._reply(409, {"error": "You already created this model repo",
                                                 "url": f"{hub.endpoint}/{repo}"})
                    hub.repos[repo] = {"main": {}}
                    hub.private[repo] = payload.get("visibility") == "private" or bool(payload.get("private"))
                    return self._reply(200, {"url": f"{hub.endpoint}/{repo}", "name": repo})
                path, _, query = self.path.partition("?")
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/discussions", path)
                if match and match.group(1) in hub.repos:
                    hub.pull_requests.append(json.loads(body))
                    return self._reply(200, {"num": len(hub.pull_requests)})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
                if not match:
                    return self._error(404, f"fake hub: no route POST {self.path}")
                repo, action, revision = match.groups()
                revision = revision.replace("%2F", "/")
                if repo not in hub.repos:
                    return self._error(404, "Repository not found", "RepoNotFound")
                if not self._owned(repo, user):
                    return self._error(403, "You don't have write access")
                if action == "branch":
                    hub.repos[repo].setdefault(revision, dict(hub.repos[repo]["main"]))
                    return self._reply(200, {})
                if action == "preupload":
                    payload = json.loads(body)
                    ignored = gitignore_matcher(payload.get("gitIgnore") or "")
                    return self._reply(200, {"files": [
                        {"path": file["path"], "uploadMode": "regular", "shouldIgnore": ignored(file["path"])}
                        for file in payload["files"]
                    ], "commitOid": "0" * 40})
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header = next(line["value"] for line in lines if line["key"] == "header")
                files = {}
                for line in lines:
                    if line["key"] == "file":
                        value = line["value"]
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif line["key"] not in ("header",):
                        return self._error(400, f"fake hub: unsupported commit operation {line['key']}")
                create_pr = "create_pr=1" in query or revision.startswith("refs/pr/")
                branch = hub.repos[repo].setdefault(revision, {})
                if not create_pr:
                    branch.update(files)
                hub.commits.append({"repo": repo, "revision": revision, "summary": header.get("summary"),
                                    "description": header.get("description"), "files": files, "create_pr": create_pr})
                oid = f"{len(hub.commits):040x}"
                reply = {"commitUrl": f"{hub.endpoint}/{repo}/commit/{oid}", "commitOid": oid}
                if create_pr:
                    reply["pullRequestUrl"] = f"{hub.endpoint}/{repo}/discussions/{len(hub.pull_requests)}"
                return self._reply(200, reply)

        return Handler
