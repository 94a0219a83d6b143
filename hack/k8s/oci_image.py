"""Write a one-binary container image as a `docker save` archive (what `ctr images import` reads).

    python3 hack/k8s/oci_image.py --binary PATH --name REF --out FILE.tar

Used for the node's sandbox (pause) image: one layer holding the static binary as /NAME, run as
65535:65535 with it as the entrypoint. Standard library only, so the node needs no image builder for it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path


def layer_tar(binary: Path) -> bytes:
    buf = io.BytesIO()
    data = binary.read_bytes()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(binary.name)
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_archive(binary: Path, name: str) -> bytes:
    """The archive: manifest.json, the config blob and the layer, as `docker save` lays them out."""
    layer = layer_tar(binary)
    layer_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [f"/{binary.name}"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
            "history": [{"created_by": f"hack/k8s/oci_image.py --binary {binary.name}"}],
        },
        sort_keys=True,
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": [f"{layer_id}/layer.tar"]}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, blob in ((config_name, config), (f"{layer_id}/layer.tar", layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_bytes(image_archive(args.binary, args.name))


if __name__ == "__main__":
    main()
