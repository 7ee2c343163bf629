#!/usr/bin/env python3
"""Verify a TUF repository with python-tuf's reference client (tuf.ngclient).

Usage:
  check_with_ngclient.py ROOT_JSON METADATA_DIR_OR_URL TARGETS_DIR_OR_URL TARGET_NAME...

  ROOT_JSON            the trusted root to bootstrap from (e.g. metadata/1.root.json)
  METADATA_DIR_OR_URL  a local directory holding N.root.json, timestamp.json, ...
                       or an http(s):// base URL for them
  TARGETS_DIR_OR_URL   a local directory holding the target files (hash-prefixed
                       when the root says consistent_snapshot), or a base URL
  TARGET_NAME          one or more target paths, e.g. artifacts/hello.img

A local directory is served read-only by http.server on 127.0.0.1 with an
OS-picked port, in a thread, for the duration of the check.

The client refreshes (root rotation -> timestamp -> snapshot -> targets), then
for each TARGET_NAME looks up its target info (walking delegations) and
downloads and verifies the file (length and hashes).

Exit status: 0 if everything verified; 1 (with the error printed) otherwise;
2 on bad usage.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import sys
import tempfile
import threading
import traceback

from tuf.ngclient import Updater


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        if os.environ.get("CHECK_NGCLIENT_VERBOSE"):
            super().log_message(format, *args)


class _LocalServer:
    """Serve a directory on 127.0.0.1:<ephemeral> in a daemon thread."""

    def __init__(self, directory: str):
        handler = functools.partial(_QuietHandler, directory=directory)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _is_url(s: str) -> bool:
    return s.startswith("http://") or s.startswith("https://")


def _base_url(arg: str, servers: list[_LocalServer]) -> str:
    if _is_url(arg):
        return arg
    if not os.path.isdir(arg):
        raise SystemExit(f"not a directory or http(s) URL: {arg}")
    srv = _LocalServer(os.path.abspath(arg))
    servers.append(srv)
    return srv.__enter__()


def run(root_json: str, metadata_arg: str, targets_arg: str, names: list[str]) -> int:
    with open(root_json, "rb") as f:
        bootstrap = f.read()

    servers: list[_LocalServer] = []
    try:
        metadata_url = _base_url(metadata_arg, servers)
        targets_url = _base_url(targets_arg, servers)
        with tempfile.TemporaryDirectory(prefix="ngclient-check-") as tmp:
            meta_dir = os.path.join(tmp, "metadata")
            dl_dir = os.path.join(tmp, "downloads")
            os.makedirs(meta_dir)
            os.makedirs(dl_dir)

            updater = Updater(
                metadata_dir=meta_dir,
                metadata_base_url=metadata_url,
                target_dir=dl_dir,
                target_base_url=targets_url,
                bootstrap=bootstrap,
            )
            updater.refresh()
            root = updater._trusted_set.root  # noqa: SLF001 (reporting only)
            print(f"root: version {root.version} (bootstrapped from {root_json})")
            ts = updater._trusted_set.timestamp  # noqa: SLF001
            sn = updater._trusted_set.snapshot  # noqa: SLF001
            tg = updater._trusted_set.targets  # noqa: SLF001
            print(
                f"timestamp v{ts.version}, snapshot v{sn.version}, targets v{tg.version}"
            )

            for name in names:
                info = updater.get_targetinfo(name)
                if info is None:
                    raise LookupError(f"target not found in the repository: {name}")
                path = updater.download_target(info)
                with open(path, "rb") as f:
                    data = f.read()
                print(
                    f"ok: {name} ({len(data)} bytes, sha256 "
                    f"{hashlib.sha256(data).hexdigest()})"
                )
    except Exception as e:  # noqa: BLE001 - report any failure and exit 1
        if os.environ.get("CHECK_NGCLIENT_VERBOSE"):
            traceback.print_exc()
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        for srv in servers:
            srv.__exit__(None, None, None)

    print(f"all {len(names)} target(s) verified")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    return run(argv[0], argv[1], argv[2], argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
