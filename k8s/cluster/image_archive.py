"""Writes a container image archive without a container engine, for images FROM scratch.

Owns the format of the cluster's own small images (pause, CoreDNS, and any other single
static binary): one layer holding the given files, a config with entrypoint, user and
exposed ports, in the `docker save` layout (manifest.json + config + layer.tar) that
`ctr images import` reads. The output is byte-for-byte reproducible (fixed times and
owners), so an unchanged input gives an unchanged image ID.

Usage: python3 image_archive.py OUT.tar NAME:TAG --file SRC:DEST[:MODE]... [--link DEST:TARGET]...
       --entrypoint ARG... [--user UID:GID] [--expose PORT/PROTO]...
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path


def _layer(files: list[tuple[Path, str, int]], links: list[tuple[str, str]]) -> bytes:
    """An uncompressed tar of the files at their destinations and the symlinks, with parent directories."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()
        def parents(dest: str) -> str:
            parts = dest.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in seen:
                    seen.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            return "/".join(parts)

        for src, dest, mode in sorted(files, key=lambda f: f[1]):
            data = src.read_bytes()
            info = tarfile.TarInfo(parents(dest))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for dest, target in sorted(links):
            info = tarfile.TarInfo(parents(dest))
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)
    return buffer.getvalue()


def build_archive(out: Path, ref: str, files: list[tuple[Path, str, int]], entrypoint: list[str],
                  user: str = "", exposed: list[str] | None = None,
                  links: list[tuple[str, str]] | None = None) -> str:
    """Write the archive to `out` and return the image ID (sha256 of its config)."""
    layer = _layer(files, links or [])
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": entrypoint,
            "User": user,
            "ExposedPorts": {port: {} for port in exposed or []},
            "Env": ["PATH=/bin:/"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "k8s/cluster/image_archive.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    layer_dir = diff_id.split(":", 1)[1]
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [ref], "Layers": [f"{layer_dir}/layer.tar"]}]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((f"{image_id}.json", config_bytes), (f"{layer_dir}/layer.tar", layer),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return "sha256:" + image_id


def _file_spec(text: str) -> tuple[Path, str, int]:
    src, dest, *mode = text.split(":")
    return Path(src), dest, int(mode[0], 8) if mode else 0o755


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("ref", help="image name:tag")
    parser.add_argument("--file", action="append", type=_file_spec, required=True, dest="files")
    parser.add_argument("--link", action="append", default=[], dest="links",
                        type=lambda text: tuple(text.split(":", 1)), help="DEST:TARGET symlink")
    parser.add_argument("--entrypoint", action="append", required=True)
    parser.add_argument("--user", default="")
    parser.add_argument("--expose", action="append", default=[])
    args = parser.parse_args()
    print(build_archive(args.out, args.ref, args.files, args.entrypoint, args.user, args.expose, args.links))


if __name__ == "__main__":
    main()
