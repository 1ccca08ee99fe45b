"""build-images: per-role node images from elements/ (diskimage-builder), cached and verified."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console

from builder.cli.common import Target, invoke, locked
from builder.errors import StackseedError
from builder.images import build
from builder.images.contract import RELEASES
from builder.images.disk import summary
from builder.paths import ELEMENTS
from builder.plain import IMAGES
from builder.roles import ROLES


def _built_roles(options: build.Options) -> tuple[str, ...]:
    release_dir = options.images_dir / options.release
    return tuple(r for r in sorted(IMAGES) if (release_dir / r / "image.json").is_file())


@contextmanager
def _cache_lock(options: build.Options) -> Iterator[None]:
    """One build at a time per image cache: the cache's lock, and --output's when the images go
    outside the cache (another cache may build into the same --output)."""
    cache = options.cache_dir
    dirs = [(cache, "STACKSEED_CACHE_DIR")]
    images = Path(os.path.abspath(options.images_dir))
    if not images.is_relative_to(os.path.abspath(cache)):
        dirs.append((options.images_dir, "--output"))
    # Not private: the cache holds nothing secret and was always made with the umask.
    with locked(f"image cache {cache}", *dirs, private=False):
        yield


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(sorted(IMAGES)),
    help="Role image to build (repeatable); 'plain' is Debian with cloud-init and no OpenStack "
    "package, for nodes with 'image: plain' (their role's packages come on first boot).",
)
@click.option(
    "--all", "all_roles", is_flag=True, help="Build every role's image (not plain: --role plain)."
)
@click.option("--release", type=click.Choice(RELEASES), default="trixie", show_default=True)
@click.option(
    "--output",
    type=Target("dir"),
    help="Images directory (default: <cache>/images; STACKSEED_CACHE_DIR moves the cache).",
)
@click.option("--force", is_flag=True, help="Rebuild even when the content key is unchanged.")
@click.option("--offline", is_flag=True, help="Build only from the cached base and .debs.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["rootfs", "disk"]),
    default="rootfs",
    show_default=True,
    help="rootfs: qcow2 root filesystem + kernel + initrd (direct kernel boot); "
    "disk: also a whole-disk GPT image that boots under UEFI (Debian's signed shim and grub, "
    "root filesystem by UUID), for firmware-booted nodes and bare metal.",
)
@click.option("--check", "check_only", is_flag=True, help="Verify built images against sha256.")
@click.option("--mirror", default=build.dib.DEBIAN_MIRROR, show_default=True, help="Debian mirror.")
@click.option(
    "--security-mirror",
    default=build.dib.SECURITY_MIRROR,
    show_default=True,
    help="Debian security mirror.",
)
@click.option(
    "--elements",
    "elements_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=ELEMENTS,
    hidden=True,
)
def command(
    roles: tuple[str, ...],
    all_roles: bool,
    release: str,
    output: Path | None,
    force: bool,
    offline: bool,
    fmt: str,
    check_only: bool,
    mirror: str,
    security_mirror: str,
    elements_dir: Path,
) -> None:
    """Build (or verify) stackseed's per-role Debian/OpenStack node images."""
    console = Console(stderr=False, highlight=False, emoji=False)
    chosen = tuple(sorted(ROLES)) if all_roles else tuple(dict.fromkeys(roles))
    options = build.Options(
        roles=chosen,
        release=release,
        output=output,
        force=force,
        offline=offline,
        fmt=fmt,
        mirror=mirror,
        security_mirror=security_mirror,
        elements_dir=elements_dir,
    )
    if check_only:
        if not chosen:
            options = build.Options(**{**options.__dict__, "roles": _built_roles(options)})
            if not options.roles:
                raise StackseedError(
                    f"no built images for {release} in {options.images_dir}",
                    fix="build-images --all",
                )
        bad = build.check(options, console)
        if bad:
            roles = sorted({item.split(":", 1)[0] for item in bad})
            raise StackseedError(
                f"verification failed: {'; '.join(bad)}",
                fix=" && ".join(f"build-images --force --role {r}" for r in roles),
            )
        return
    if not chosen:
        raise click.UsageError("say which images: --role ROLE (repeatable) or --all")
    with _cache_lock(options):
        outcomes = build.build(options, console)
    for outcome in outcomes:
        if outcome.built:
            size = outcome.info.rootfs_path.stat().st_size
            console.print(
                f"[green]{outcome.role}[/]: built in {outcome.seconds:.0f} s, "
                f"{size / (1 << 20):.0f} MiB, {outcome.downloaded / (1 << 20):.0f} MiB of .debs "
                f"downloaded -> {outcome.info.directory}"
            )
        disk_info, disk_path = outcome.info.disk, outcome.info.disk_path
        if outcome.disk_seconds is not None and disk_info is not None and disk_path is not None:
            console.print(
                f"[green]{outcome.role}[/]: whole-disk image assembled in "
                f"{outcome.disk_seconds:.0f} s, {disk_path.stat().st_size / (1 << 20):.0f} MiB "
                f"on disk; {summary(disk_info)}; bootloader {', '.join(disk_info.bootloader)}"
            )


def main(argv: list[str] | None = None) -> int:
    """Entry point: StackseedError becomes its exit code and a sentence, never a traceback."""
    return invoke(command, argv, "build-images")


if __name__ == "__main__":
    sys.exit(main())
