#!/usr/bin/env python3
"""Write a small TUF repository with python-tuf's Metadata API.

The repository is the interop fixture for the Rust side (ota-core): it is made
by the reference implementation, so our verifier must accept it, and
`check_with_ngclient.py` must accept it too.

Everything is deterministic:
  * private keys are derived from fixed seeds (Ed25519: a 32-byte seed;
    ECDSA P-256: a fixed scalar), so key ids never change;
  * expiry is 2099-01-01T00:00:00Z and all versions are fixed;
  * Ed25519 signatures are deterministic by definition, and ECDSA signatures
    are made with RFC 6979 deterministic nonces (pyca/cryptography's
    `deterministic_signing=True`), so re-running reproduces every file byte for
    byte. (Verification does not care: an RFC 6979 signature is an ordinary
    ECDSA signature, DER-encoded like any other.)

Layout written (consistent_snapshot = true):

  python-tuf-repo/metadata/1.root.json      root v1, signed by root-a, root-b
  python-tuf-repo/metadata/2.root.json      root v2 (root-c replaced by root-d),
                                            signed by root-a, root-c (v1 threshold)
                                            and root-a, root-d (v2 threshold)
  python-tuf-repo/metadata/timestamp.json
  python-tuf-repo/metadata/1.snapshot.json
  python-tuf-repo/metadata/1.targets.json   delegates `release` (terminating,
                                            paths ["artifacts/*"])
  python-tuf-repo/metadata/1.release.json
  python-tuf-repo/targets/releases/stable/<sha256>.1.json
  python-tuf-repo/targets/artifacts/<sha256>.hello.img
  python-tuf-repo/keys.json                 the public keys and their ids, and
                                            the seeds, for tests (NOT secret:
                                            these are test keys)

Usage:
  make_python_tuf_repo.py [--out DIR] [--check]

  --out DIR   write the repository to DIR (default: python-tuf-repo/ next to
              this script); DIR is removed and re-created.
  --check     write to a temporary directory and compare with --out instead
              of overwriting it; exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "python-tuf-repo")

# Fixed (not taken from the installed python-tuf) so output does not depend on it.
SPEC_VERSION = "1.0.31"
EXPIRES = datetime(2099, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
SEED_DOMAIN = b"enigm-ota interop test key v1:"
RELEASE_AUTHORITY_FIELD = "x-enigm-release-authority"

# P-256 group order.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class DeterministicCryptoSigner(CryptoSigner):
    """CryptoSigner whose ECDSA signatures use RFC 6979 nonces.

    The key, key id and signature encoding are exactly CryptoSigner's (the
    signature is the hex of the DER `ECDSA-Sig-Value`); only the nonce choice
    differs, which makes the output reproducible.
    """

    def sign(self, payload: bytes) -> Signature:
        if isinstance(self._private_key, ec.EllipticCurvePrivateKey):
            assert self.public_key.scheme == "ecdsa-sha2-nistp256"
            der = self._private_key.sign(
                payload, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
            )
            return Signature(self.public_key.keyid, der.hex())
        return super().sign(payload)


def seed_bytes(name: str) -> bytes:
    return hashlib.sha256(SEED_DOMAIN + name.encode()).digest()


def ed25519_signer(name: str) -> DeterministicCryptoSigner:
    priv = Ed25519PrivateKey.from_private_bytes(seed_bytes(name))
    return DeterministicCryptoSigner(priv)  # public key + default keyid derived


def ecdsa_p256_signer(name: str) -> DeterministicCryptoSigner:
    scalar = int.from_bytes(seed_bytes(name), "big") % (P256_N - 1) + 1
    priv = ec.derive_private_key(scalar, ec.SECP256R1())
    return DeterministicCryptoSigner(priv)


# name -> (kind, signer). Names are stable; tests may refer to them.
def make_keys() -> dict[str, DeterministicCryptoSigner]:
    return {
        "root-a": ed25519_signer("root-a"),
        "root-b": ecdsa_p256_signer("root-b"),
        "root-c": ed25519_signer("root-c"),
        "root-d": ecdsa_p256_signer("root-d"),
        "targets": ecdsa_p256_signer("targets"),
        "release": ed25519_signer("release"),
        "snapshot": ed25519_signer("snapshot"),
        "timestamp": ed25519_signer("timestamp"),
    }


def hello_img() -> bytes:
    """6 KiB of deterministic bytes (a SHA-256 counter stream)."""
    out = bytearray()
    i = 0
    while len(out) < 6 * 1024:
        out += hashlib.sha256(b"enigm-ota interop hello.img:" + i.to_bytes(4, "big")).digest()
        i += 1
    return bytes(out[: 6 * 1024])


def release_manifest() -> bytes:
    """A small release manifest (illustrative; the Rust side defines the real schema)."""
    doc = {
        "channel": "stable",
        "release": 1,
        "version": "2099.1.0",
        "security": False,
        "models": ["enigm-devkit-1"],
        "min_from_release": 0,
        "artifacts": [{"target": "artifacts/hello.img", "slot": "system"}],
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def serialize(md: Metadata) -> bytes:
    # python-tuf's default file format: indent=1, sort_keys, ", " / ": ".
    return JSONSerializer(compact=False).serialize(md)


def metafile_for(version: int, data: bytes) -> MetaFile:
    return MetaFile(
        version=version,
        length=len(data),
        hashes={"sha256": hashlib.sha256(data).hexdigest()},
    )


def key_entry(signer: CryptoSigner) -> dict:
    return signer.public_key.to_dict()


def make_root(version: int, keys: dict, root_names: list[str]) -> Root:
    root = Root(
        version=version,
        spec_version=SPEC_VERSION,
        expires=EXPIRES,
        consistent_snapshot=True,
        unrecognized_fields={
            RELEASE_AUTHORITY_FIELD: {
                "keys": {keys["release"].public_key.keyid: key_entry(keys["release"])},
                "keyids": [keys["release"].public_key.keyid],
                "threshold": 1,
            }
        },
    )
    # Root() starts with empty roles of threshold 1; fill them.
    for name in root_names:
        root.add_key(keys[name].public_key, Root.type)
    root.roles[Root.type].threshold = 2
    root.add_key(keys["targets"].public_key, Targets.type)
    root.add_key(keys["snapshot"].public_key, Snapshot.type)
    root.add_key(keys["timestamp"].public_key, Timestamp.type)
    for role in (Targets.type, Snapshot.type, Timestamp.type):
        assert root.roles[role].threshold == 1
    return root


def build(out: str) -> None:
    keys = make_keys()
    meta_dir = os.path.join(out, "metadata")
    tgt_dir = os.path.join(out, "targets")
    os.makedirs(meta_dir)
    os.makedirs(tgt_dir)

    def write(path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    # --- target files (consistent snapshot: <sha256>.<basename>) ----------
    files = {
        "releases/stable/1.json": release_manifest(),
        "artifacts/hello.img": hello_img(),
    }
    target_infos = {}
    for path, data in files.items():
        tf = TargetFile.from_data(path, data, ["sha256"])
        target_infos[path] = tf
        d, b = os.path.split(path)
        write(os.path.join(tgt_dir, d, f"{tf.hashes['sha256']}.{b}"), data)

    # --- root v1: root-a (ed25519), root-b (ecdsa), root-c (ed25519), 2-of-3
    root1 = Metadata(make_root(1, keys, ["root-a", "root-b", "root-c"]))
    root1.sign(keys["root-a"], append=True)
    root1.sign(keys["root-b"], append=True)
    write(os.path.join(meta_dir, "1.root.json"), serialize(root1))

    # --- root v2: root-c replaced by root-d (ecdsa), 2-of-3.
    # Signed by root-a + root-c (meets v1's threshold: root-c is only in v1)
    # and root-a + root-d (meets v2's threshold: root-d is only in v2).
    root2 = Metadata(make_root(2, keys, ["root-a", "root-b", "root-d"]))
    for name in ("root-a", "root-c", "root-d"):
        root2.sign(keys[name], append=True)
    write(os.path.join(meta_dir, "2.root.json"), serialize(root2))

    # --- release (delegated) ----------------------------------------------
    release = Metadata(
        Targets(
            version=1,
            spec_version=SPEC_VERSION,
            expires=EXPIRES,
            targets={"artifacts/hello.img": target_infos["artifacts/hello.img"]},
        )
    )
    release.sign(keys["release"])
    release_bytes = serialize(release)
    write(os.path.join(meta_dir, "1.release.json"), release_bytes)

    # --- targets ------------------------------------------------------------
    delegations = Delegations(
        keys={keys["release"].public_key.keyid: keys["release"].public_key},
        roles={
            "release": DelegatedRole(
                name="release",
                keyids=[keys["release"].public_key.keyid],
                threshold=1,
                terminating=True,
                paths=["artifacts/*"],
            )
        },
    )
    targets = Metadata(
        Targets(
            version=1,
            spec_version=SPEC_VERSION,
            expires=EXPIRES,
            targets={"releases/stable/1.json": target_infos["releases/stable/1.json"]},
            delegations=delegations,
        )
    )
    targets.sign(keys["targets"])
    targets_bytes = serialize(targets)
    write(os.path.join(meta_dir, "1.targets.json"), targets_bytes)

    # --- snapshot (with length + sha256 of each targets file) --------------
    snapshot = Metadata(
        Snapshot(
            version=1,
            spec_version=SPEC_VERSION,
            expires=EXPIRES,
            meta={
                "targets.json": metafile_for(1, targets_bytes),
                "release.json": metafile_for(1, release_bytes),
            },
        )
    )
    snapshot.sign(keys["snapshot"])
    snapshot_bytes = serialize(snapshot)
    write(os.path.join(meta_dir, "1.snapshot.json"), snapshot_bytes)

    # --- timestamp ------------------------------------------------------------
    timestamp = Metadata(
        Timestamp(
            version=1,
            spec_version=SPEC_VERSION,
            expires=EXPIRES,
            snapshot_meta=metafile_for(1, snapshot_bytes),
        )
    )
    timestamp.sign(keys["timestamp"])
    write(os.path.join(meta_dir, "timestamp.json"), serialize(timestamp))

    # --- keys.json: public keys, ids and seeds, for the Rust tests -----------
    info = {}
    for name, signer in keys.items():
        pk = signer.public_key
        entry = {
            "keyid": pk.keyid,
            "key": pk.to_dict(),
            "seed_sha256_input": (SEED_DOMAIN + name.encode()).decode(),
        }
        if pk.keytype == "ed25519":
            entry["ed25519_seed_hex"] = seed_bytes(name).hex()
        else:
            scalar = int.from_bytes(seed_bytes(name), "big") % (P256_N - 1) + 1
            entry["p256_scalar_hex"] = f"{scalar:064x}"
        info[name] = entry
    write(
        os.path.join(out, "keys.json"),
        (json.dumps(info, indent=2, sort_keys=True) + "\n").encode(),
    )


def same_tree(a: str, b: str) -> list[str]:
    diffs = []
    cmp = filecmp.dircmp(a, b)

    def walk(c: filecmp.dircmp, rel: str) -> None:
        for n in c.left_only + c.right_only:
            diffs.append(os.path.join(rel, n) + " (only on one side)")
        for n in c.common_files:
            if not filecmp.cmp(os.path.join(c.left, n), os.path.join(c.right, n), shallow=False):
                diffs.append(os.path.join(rel, n))
        for n, sub in c.subdirs.items():
            walk(sub, os.path.join(rel, n))

    walk(cmp, "")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = os.path.join(tmp, "repo")
            build(fresh)
            diffs = same_tree(fresh, args.out)
        if diffs:
            print("regenerated repository differs from", args.out, file=sys.stderr)
            for d in diffs:
                print("  " + d, file=sys.stderr)
            return 1
        print("regenerated repository is identical to", args.out)
        return 0

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    build(args.out)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
