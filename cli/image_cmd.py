"""`lab.py image build [--force]` and `lab.py image list`."""

from __future__ import annotations

import argparse
import sys

from cli.common import print_json
from halab.lab import image


def register(sub) -> None:
    p = sub.add_parser("image", help="build or list the offline base image",
                       description="The Debian 12 base image with every role's packages, built once with "
                       "mmdebstrap and cached by recipe hash.")
    isub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)
    b = isub.add_parser("build", help="build the base image unless the cache has it (minutes when cold)")
    b.add_argument("--force", action="store_true", help="rebuild even if the cache has the image")
    b.set_defaults(func=_build)
    ls = isub.add_parser("list", help="list cached images")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)


def _print_event(ev: image.ImageEvent) -> None:
    print(f"[{ev.elapsed:4.0f}s] {ev.phase}: {ev.message}", flush=True)


def _build(args: argparse.Namespace) -> int:
    rhash = image.recipe_hash()
    if not args.force and image.find_image(rhash) is not None:
        img = image.find_image(rhash)
        assert img is not None
        print(f"image {rhash} is cached: {img.path}")
        return 0
    print(f"building base image {rhash} (Debian {image.SUITE}, {len(image.packages())} packages); "
          "a cold build takes a few minutes", flush=True)
    try:
        img = image.ensure_image(progress=_print_event, force=args.force)
    except image.ImageBuildFailed:
        log = image.failure_log()
        if log:
            print(f"full build log: {log}", file=sys.stderr)
        raise
    m = img.manifest
    print(f"image {img.recipe_hash}: {img.path}")
    print(f"  disk   {img.disk} ({m['sizes']['disk_bytes'] / 2**20:.0f} MiB, "
          f"filesystem {m['sizes']['filesystem_bytes'] / 2**30:.2f} GiB)")
    print(f"  kernel {img.kernel} ({m['kernel_version']})")
    print(f"  initrd {img.initrd}")
    print(f"  cmdline {img.kernel_cmdline}")
    print(f"  built in {m['build_seconds']:.0f}s, {len(m['packages'])} packages")
    return 0


def _list(args: argparse.Namespace) -> int:
    current = image.recipe_hash()
    imgs = image.list_images()
    if args.json:
        print_json([{"recipe_hash": i.recipe_hash, "current": i.recipe_hash == current, "path": str(i.path),
                     "disk": str(i.disk), "kernel": str(i.kernel), "initrd": str(i.initrd),
                     "size_bytes": i.size_bytes, "built_at": i.manifest.get("built_at"),
                     "build_seconds": i.manifest.get("build_seconds"),
                     "kernel_version": i.manifest.get("kernel_version")} for i in imgs])
        return 0
    if not imgs:
        print(f"no images in {image.images_dir()}; current recipe {current} "
              "(run `./lab.py image build`)")
        return 0
    print(f"{'HASH':16}  {'CURRENT':7}  {'SIZE':>8}  {'BUILT':20}  {'KERNEL':20}  PATH")
    for i in imgs:
        print(f"{i.recipe_hash:16}  {'yes' if i.recipe_hash == current else 'no':7}  "
              f"{i.size_bytes / 2**20:6.0f}Mi  {i.manifest.get('built_at', '?'):20}  "
              f"{i.manifest.get('kernel_version', '?'):20}  {i.path}")
    if all(i.recipe_hash != current for i in imgs):
        print(f"current recipe {current} is not built (run `./lab.py image build`)")
    return 0
