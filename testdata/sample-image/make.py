#!/usr/bin/env python3
"""Writes a tiny, byte-reproducible linux/amd64 OCI image layout next to this file.

Layout: oci-layout, index.json (one manifest, ref.name "latest"), blobs/sha256/...
Image:  one gzip'd tar layer holding /hello.txt ("hello from marque\\n"),
        an OCI image config and an OCI image manifest.

Everything is fixed (mtimes, owners, gzip header, JSON key order), so running
this again gives the same bytes and the same manifest digest. Python 3 stdlib only.
Usage: python3 testdata/sample-image/make.py [--check]
  --check  exit 1 unless the files on disk already equal what would be written.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
MTIME = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
FILES = [("hello.txt", b"hello from marque\n")]


def dumps(obj):
    # Compact JSON, keys in insertion order, no trailing newline.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in FILES:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzipped(data):
    buf = io.BytesIO()
    # filename="" and a fixed mtime keep the gzip header constant.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def build():
    """Returns {relative path: bytes} for the whole layout."""
    tar = layer_tar()
    layer = gzipped(tar)
    config = dumps({
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/hello.txt"],
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created": CREATED, "created_by": "testdata/sample-image/make.py"}],
    })
    manifest = dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(layer),
            "size": len(layer),
        }],
    })
    index = dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(manifest),
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    })
    files = {
        "oci-layout": dumps({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
    }
    for blob in (layer, config, manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    return files, sha256(manifest)


def main():
    files, digest = build()
    check = "--check" in sys.argv[1:]
    blobdir = os.path.join(HERE, "blobs", "sha256")
    wanted = set(files)
    present = set()
    if os.path.isdir(blobdir):
        present = {"blobs/sha256/" + n for n in os.listdir(blobdir)}
    ok = True
    for rel in sorted(present - wanted):
        ok = False
        if not check:
            os.remove(os.path.join(HERE, rel))
    for rel, data in sorted(files.items()):
        path = os.path.join(HERE, rel)
        try:
            with open(path, "rb") as f:
                same = f.read() == data
        except FileNotFoundError:
            same = False
        if same:
            continue
        ok = False
        if check:
            print("differs: " + rel, file=sys.stderr)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    print(digest)
    if check and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
