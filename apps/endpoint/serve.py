"""A minimal HTTP server for `handler.py`, for a custom container (the Hugging Face inference toolkit's image cannot
run transformers 5; see docs/serving.md).

    python -m clip2video.apps.endpoint.serve /repository --port 80       # or: python serve.py /repository

It imports the folder's `handler.py` as the toolkit does and speaks the toolkit's protocol (`POST /` or `/predict`
with a JSON body `{"inputs": ..., "parameters": ...}`, `GET /` or `/health` for health), but tells errors apart:
the handler's `RequestError` is answered with its `status_code` (400, 413) and `{"error": message}`, a body that is
not JSON with 400 or 415, a body over the size limit with 413, and any other exception — a failure of the server,
not of the request — with 500 and a generic message (the details go to the log, not to the client). Requests run one
at a time, as in the toolkit. Standard library only.
"""

import argparse
import importlib.util
import json
import os
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def load_handler(model_dir: str):
    """The folder's `EndpointHandler(model_dir)` and its module, imported as the toolkit imports them."""
    sys.path.insert(0, model_dir)
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", os.path.join(model_dir, "handler.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler.EndpointHandler"] = module
    spec.loader.exec_module(module)
    return module, module.EndpointHandler(model_dir)


def max_body_bytes() -> int:
    """Base64 of the largest accepted videos of one request, plus room for the JSON around them."""
    max_input = int(os.environ.get("CLIP2VIDEO_MAX_INPUT_BYTES") or 256 * 2**20)
    max_videos = int(os.environ.get("CLIP2VIDEO_ENDPOINT_MAX_VIDEOS") or 8)
    return 4 * (max_input // 3 + 1) * max_videos + 2**20


def make_server(model_dir: str, host: str, port: int) -> ThreadingHTTPServer:
    module, endpoint = load_handler(model_dir)
    lock = threading.Lock()
    body_limit = max_body_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path in ("/", "/health"):
                self._answer(200, "Ok", content_type="text/plain")
            else:
                self._answer(404, {"error": f"No route {self.path}."})

        def do_POST(self):
            if self.path not in ("/", "/predict"):
                return self._answer(404, {"error": f"No route {self.path}."})
            if self.headers.get("Content-Type", "application/json").split(";")[0].strip() != "application/json":
                return self._answer(415, {"error": "Send the request as application/json."})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._answer(411, {"error": "The request needs a Content-Length."})
            if length < 0 or length > body_limit:
                self.close_connection = True
                return self._answer(413, {"error": f"The request body is over {body_limit} bytes."})
            try:
                body = json.loads(self.rfile.read(length))
            except (ValueError, UnicodeDecodeError) as error:
                return self._answer(400, {"error": f"The request body is not JSON ({error})."})
            try:
                with lock:
                    answer = endpoint(body)
            except module.RequestError as error:
                return self._answer(error.status_code, {"error": str(error)})
            except Exception:  # the server's failure: logged in full, not shown to the client
                traceback.print_exc()
                return self._answer(500, {"error": "Internal server error."})
            self._answer(200, answer)

        def _answer(self, status: int, payload, content_type: str = "application/json"):
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="the published folder (with handler.py)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args(argv)
    server = make_server(args.model_dir, args.host, args.port)
    print(f"serving {args.model_dir} on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
