"""A real local HTTP server of PNGs for the worker's image tests (stdlib, in a thread)."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from core.images import Rules, rules_from


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@contextlib.contextmanager
def serving(files: dict[str, bytes]) -> Iterator[tuple[str, Rules]]:
    """Serve `files` by path at http://127.0.0.1:<port>: (the base URL, rules trusting exactly that origin)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield f"http://127.0.0.1:{port}", rules_from(https_only=False, trusted=frozenset({f"127.0.0.1:{port}"}))
    finally:
        server.shutdown()
        server.server_close()
