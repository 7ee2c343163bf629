#!/usr/bin/env python3
"""A plain TUF repository written by python-tuf's Metadata API, for the tests of
`ota-tuf-client` and `ota-device verify` (device-client/tests/device/).

Plain TUF: no `x-enigm-release-authority` in root, Ed25519 keys only, consistent
snapshots, a root rotation (v1 -> v2), a delegated role and target paths that
need quoting. Keys come from fixed seeds (test keys, not secret), so the script
can be run again on the same directory to re-sign one role.

Usage:
  make_tuf_repo.py new DIR [--no-consistent-snapshot]
      DIR/metadata/{1,2}.root.json, 1.targets.json, 1.delegated.json,
      1.snapshot.json, timestamp.json (version 1) and DIR/targets/ with the
      targets under hash-prefixed names. Every role expires in 2099. Without
      consistent snapshots: targets.json, delegated.json, snapshot.json and
      the targets under their own names.
  make_tuf_repo.py timestamp DIR VERSION EXPIRES
      re-sign DIR/metadata/timestamp.json with VERSION and EXPIRES
      (YYYY-MM-DDTHH:MM:SSZ), pinning snapshot version 1.

The targets (path: content):
  file1.txt: b"conformance target one\n"
  a dir/file 2.txt: 4096 bytes of a SHA-256 counter stream
  delegated/file3.txt: b"listed by the delegated role\n" (in role `delegated`)
"""

from __future__ import annotations

import hashlib
import os
import sys
from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

SPEC_VERSION = "1.0.31"
EXPIRES = datetime(2099, 1, 1, tzinfo=timezone.utc)


def signer(name: str) -> CryptoSigner:
    seed = hashlib.sha256(b"enigm-ota device test key v1:" + name.encode()).digest()
    return CryptoSigner(Ed25519PrivateKey.from_private_bytes(seed))


KEYS = {n: signer(n) for n in ["root-1", "root-2", "targets", "snapshot", "timestamp", "delegated"]}


def targets_content() -> dict[str, bytes]:
    stream = bytearray()
    i = 0
    while len(stream) < 4096:
        stream += hashlib.sha256(b"file 2:" + i.to_bytes(4, "big")).digest()
        i += 1
    return {
        "file1.txt": b"conformance target one\n",
        "a dir/file 2.txt": bytes(stream[:4096]),
        "delegated/file3.txt": b"listed by the delegated role\n",
    }


def write(path: str, md_or_bytes) -> bytes:
    data = md_or_bytes
    if isinstance(md_or_bytes, Metadata):
        data = JSONSerializer(compact=False).serialize(md_or_bytes)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return data


def sign(md: Metadata, *names: str) -> Metadata:
    for n in names:
        md.sign(KEYS[n], append=True)
    return md


def make_root(version: int, root_key: str, consistent: bool) -> Root:
    root = Root(version=version, spec_version=SPEC_VERSION, expires=EXPIRES, consistent_snapshot=consistent)
    root.add_key(KEYS[root_key].public_key, Root.type)
    for role in (Targets.type, Snapshot.type, Timestamp.type):
        root.add_key(KEYS[role].public_key, role)
    return root


def metafile(version: int, data: bytes) -> MetaFile:
    return MetaFile(version=version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})


def new(repo: str, consistent: bool) -> None:
    meta = os.path.join(repo, "metadata")
    prefix = "1." if consistent else ""
    write(os.path.join(meta, "1.root.json"), sign(Metadata(make_root(1, "root-1", consistent)), "root-1"))
    # Rotation: v2 is signed by the old root key (v1's threshold) and the new one.
    write(os.path.join(meta, "2.root.json"), sign(Metadata(make_root(2, "root-2", consistent)), "root-1", "root-2"))

    contents = targets_content()
    top = Targets(version=1, spec_version=SPEC_VERSION, expires=EXPIRES)
    delegated = Targets(version=1, spec_version=SPEC_VERSION, expires=EXPIRES)
    for path, data in contents.items():
        info = TargetFile.from_data(path, data, ["sha256"])
        (delegated if path.startswith("delegated/") else top).targets[path] = info
        d, _, base = path.rpartition("/")
        name = f"{info.hashes['sha256']}.{base}" if consistent else base
        served = os.path.join(repo, "targets", d, name)
        write(served, data)
    key = KEYS["delegated"].public_key
    top.delegations = Delegations(
        keys={key.keyid: key},
        roles={"delegated": DelegatedRole("delegated", [key.keyid], 1, True, ["delegated/*"])},
    )
    targets_bytes = write(os.path.join(meta, f"{prefix}targets.json"), sign(Metadata(top), "targets"))
    delegated_bytes = write(os.path.join(meta, f"{prefix}delegated.json"), sign(Metadata(delegated), "delegated"))
    snapshot = Snapshot(version=1, spec_version=SPEC_VERSION, expires=EXPIRES)
    snapshot.meta = {"targets.json": metafile(1, targets_bytes), "delegated.json": metafile(1, delegated_bytes)}
    write(os.path.join(meta, f"{prefix}snapshot.json"), sign(Metadata(snapshot), "snapshot"))
    timestamp(repo, 1, EXPIRES)


def timestamp(repo: str, version: int, expires: datetime) -> None:
    meta = os.path.join(repo, "metadata")
    name = "1.snapshot.json" if os.path.exists(os.path.join(meta, "1.snapshot.json")) else "snapshot.json"
    with open(os.path.join(meta, name), "rb") as f:
        snapshot_bytes = f.read()
    ts = Timestamp(version=version, spec_version=SPEC_VERSION, expires=expires,
                   snapshot_meta=metafile(1, snapshot_bytes))
    write(os.path.join(meta, "timestamp.json"), sign(Metadata(ts), "timestamp"))


def main() -> int:
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "new":
        new(args[1], True)
    elif len(args) == 3 and args[0] == "new" and args[2] == "--no-consistent-snapshot":
        new(args[1], False)
    elif len(args) == 4 and args[0] == "timestamp":
        expires = datetime.strptime(args[3], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        timestamp(args[1], int(args[2]), expires)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
