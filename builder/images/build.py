"""build-images: decide which role images are stale, build those one at a time, publish them.

With --format disk, each role's whole-disk image is then assembled from its root filesystem
(builder/images/disk.py) when it is missing or was made from another one.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from builder.errors import PrerequisiteError, StackseedError
from builder.images import bootloader, debcache, dib, disk, leftovers, prereqs
from builder.images.contract import IMAGE_JSON, ImageInfo, add_disk, image_dir, load_image_info
from builder.images.key import content_key, dib_version
from builder.images.progress import ProgressView, relevant_lines
from builder.paths import ELEMENTS, cache_root
from builder.plain import IMAGES


@dataclass(frozen=True)
class Options:
    roles: tuple[str, ...]
    release: str = "trixie"
    output: Path | None = None  # images root; default <cache>/images
    cache: Path | None = None  # default builder.paths.cache_root()
    force: bool = False
    offline: bool = False
    fmt: str = "rootfs"  # rootfs, or disk: also a whole-disk image
    mirror: str = dib.DEBIAN_MIRROR
    security_mirror: str = dib.SECURITY_MIRROR
    elements_dir: Path = ELEMENTS

    @property
    def cache_dir(self) -> Path:
        return self.cache or cache_root()

    @property
    def images_dir(self) -> Path:
        return self.output or self.cache_dir / "images"

    @property
    def deb_cache(self) -> Path:
        return self.cache_dir / "debs" / self.release

    @property
    def dib_cache(self) -> Path:
        return self.cache_dir / "dib"

    def log_path(self, role: str) -> Path:
        return self.cache_dir / "logs" / self.release / f"{role}.log"


@dataclass(frozen=True)
class Step:
    role: str
    element: str
    key: str
    directory: Path
    reason: str | None  # None: up to date
    disk_key: str | None = None  # with --format disk
    disk_reason: str | None = None  # None: no disk wanted, or it is up to date


@dataclass
class Outcome:
    role: str
    built: bool
    info: ImageInfo
    seconds: float = 0.0
    downloaded: int = 0
    log: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)
    disk_seconds: float | None = None  # set when a whole-disk image was assembled


def _staleness(directory: Path, key: str, force: bool) -> str | None:
    if force:
        return "--force"
    if not (directory / IMAGE_JSON).is_file():
        return "not built yet"
    try:
        info = load_image_info(directory)
    except StackseedError:
        return "image.json unreadable"
    if info.key != key:
        return "elements or build inputs changed"
    if not all(p.is_file() for p in info.boot_files()):
        return "image files missing"
    return None


def _disk_staleness(directory: Path, key: str, rootfs_reason: str | None) -> str | None:
    if rootfs_reason is not None:
        return f"root filesystem to be built ({rootfs_reason})"
    info = load_image_info(directory)
    if info.disk is None:
        return "not assembled yet"
    if info.disk.key != key:
        return "root filesystem or disk recipe changed"
    if info.disk_path is None or not info.disk_path.is_file():
        return "disk image missing"
    return None


def plan(options: Options) -> list[Step]:
    """For each requested role: its content key and why it needs building (None: it does not)."""
    version = dib_version()
    steps = []
    for role in options.roles:
        if role not in IMAGES:
            raise StackseedError(
                f"unknown role {role!r}", fix=f"use one of: {', '.join(sorted(IMAGES))}"
            )
        element = IMAGES[role]
        # diskimage-builder always makes the root filesystem; a disk is assembled from it.
        key = content_key(element, role, options.release, "rootfs", options.elements_dir, version)
        directory = image_dir(options.release, role, options.images_dir)
        reason = _staleness(directory, key, options.force)
        step = Step(role, element, key, directory, reason)
        if options.fmt == "disk":
            dkey = disk.disk_key(key)
            step = replace(
                step, disk_key=dkey, disk_reason=_disk_staleness(directory, dkey, reason)
            )
        steps.append(step)
    return steps


def _base_tarball(options: Options) -> Path:
    # Where DIB's debootstrap element keeps the Debian base it reuses (DIB_DEBOOTSTRAP_CACHE).
    return options.dib_cache / f"debootstrap-debian-{options.release}-amd64.tar.gz"


def _check_offline(options: Options) -> None:
    tarball = _base_tarball(options)
    if not tarball.is_file():
        raise PrerequisiteError(
            f"--offline needs the cached Debian base {tarball}, and it is not there",
            fix=f"run build-images --release {options.release} once without --offline",
        )


def build_one(step: Step, options: Options, console: Console, env: dict[str, str]) -> Outcome:
    staging = step.directory.parent / f".staging-{step.role}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        outcome = _build_in(staging, step, options, console, env)
    except BaseException:
        # Interrupted or failed, a full disk included: no half-built image stays behind.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # DIB extracted (or just made) the cached Debian base and the build succeeded: it is whole.
    leftovers.mark_whole(_base_tarball(options))
    return outcome


def _build_in(
    staging: Path, step: Step, options: Options, console: Console, env: dict[str, str]
) -> Outcome:
    job = dib.DibRun(
        role=step.role,
        element=step.element,
        release=options.release,
        fmt="rootfs",
        elements_dir=options.elements_dir,
        deb_cache=options.deb_cache,
        dib_cache=options.dib_cache,
        staging=staging,
        offline=options.offline,
        mirror=options.mirror,
        security_mirror=options.security_mirror,
    )
    log = options.log_path(step.role)
    options.deb_cache.mkdir(parents=True, exist_ok=True)
    options.dib_cache.mkdir(parents=True, exist_ok=True)
    if options.offline:
        count = debcache.write_index(options.deb_cache, env)
        console.print(f"[dim]offline: {count} cached packages indexed in {options.deb_cache}")
    before = debcache.deb_bytes(options.deb_cache)
    base_cached = _base_tarball(options).is_file()
    console.print(f"[bold]{step.role}[/]: building ({step.reason}); log: {log}")
    console.print(f"[dim]$ {' '.join(job.command())}")
    started = time.monotonic()
    view = ProgressView(console, step.role)

    def stopping() -> None:
        view.fail()
        console.print(
            f"[yellow]{step.role}[/]: interrupted in DIB's {view.tracker.phase or 'start-up'} "
            "phase; stopping diskimage-builder (it unmounts and removes its work; Ctrl-C again "
            "to kill it at once)",
            soft_wrap=True,
        )

    with view:
        status = dib.run(job, log, view.feed, env, on_stop=stopping)
        if status != 0:
            view.fail()
    seconds = time.monotonic() - started
    if status != 0:
        phase = view.tracker.phase or "start-up"
        tail = list(view.tracker.tail)
        detail = "\n".join(f"  {line}" for line in relevant_lines(tail))
        fix = f"read the full log, fix the cause, then rerun build-images --role {step.role}"
        if any("No space left on device" in line for line in tail):
            fix = (
                f"free space where the build writes (the images under {options.images_dir}, "
                f"DIB's work under /tmp), then rerun build-images --role {step.role}"
            )
        raise StackseedError(
            f"building the {step.role} image failed in DIB's {phase} phase "
            f"(hook {view.tracker.hook or '-'}, exit {status}); last log lines:\n{detail}",
            fix=fix,
            log=str(log),
        )
    downloaded = debcache.deb_bytes(options.deb_cache) - before
    stats: dict[str, object] = {
        "seconds": round(seconds, 1),
        "downloaded_debs_bytes": downloaded,
        # What apt reported downloading (the Debian base by debootstrap is not included).
        "apt_fetched_bytes": view.tracker.fetched,
        "deb_cache_bytes_before": before,
        "offline": options.offline,
        "forced": options.force,
        "base_cached": base_cached,
        "phases": {k: round(v, 1) for k, v in view.tracker.finished.items()},
    }
    info = dib.publish(job, step.directory, step.key, dib_version(), stats)
    return Outcome(step.role, True, info, seconds, downloaded, log, stats)


def _put_right(options: Options, console: Console, *, caches: bool) -> None:
    """Remove what interrupted builds left (builder/images/leftovers.py), saying so; with
    `caches`, also the .debs and Debian base a kill cut short, before a build reuses them."""
    release_dir = options.images_dir / options.release
    for path in leftovers.work_left(release_dir, options.deb_cache):
        leftovers.remove(path)
        console.print(f"[dim]removed {path}: left by an interrupted build", soft_wrap=True)
    if not caches:
        return
    for deb in leftovers.broken_debs(options.deb_cache):
        deb.unlink()
        console.print(
            f"[yellow]removed {deb}[/]: cut short (an interrupted build); an online build "
            "fetches it again",
            soft_wrap=True,
        )
    tarball = _base_tarball(options)
    if not leftovers.check_base(tarball):
        console.print(
            f"[yellow]removed the cached Debian base {tarball}[/]: cut short (an interrupted "
            "build); the next online build makes it again",
            soft_wrap=True,
        )


def _tool_env(env: dict[str, str]) -> dict[str, str]:
    return {"PATH": env.get("PATH", os.defpath), "LC_ALL": "C", "HOME": env.get("HOME", "/")}


def assemble_disk(
    step: Step, info: ImageInfo, options: Options, console: Console, env: dict[str, str]
) -> tuple[ImageInfo, float]:
    """Assemble the role's whole-disk image from its root filesystem and add it to the image
    directory; the time it took."""
    assert step.disk_key is not None
    console.print(f"[bold]{step.role}[/]: assembling the whole-disk image ({step.disk_reason})")
    started = time.monotonic()
    tools = _tool_env(env)
    options.deb_cache.mkdir(parents=True, exist_ok=True)
    loader = bootloader.collect(
        options.deb_cache,
        options.release,
        tools,
        offline=options.offline,
        mirror=options.mirror,
        security_mirror=options.security_mirror,
    )
    staging = step.directory.parent / f".disk-staging-{step.role}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        described = disk.assemble(
            role=step.role,
            release=options.release,
            rootfs=info.rootfs_path,
            key=step.disk_key,
            bootloader=loader,
            out=staging / f"{step.role}.disk.qcow2",
            work=staging / "work",
            env=tools,
        )
        info = add_disk(info, staging / described.file, described)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info, time.monotonic() - started


def build(options: Options, console: Console, env: dict[str, str] | None = None) -> list[Outcome]:
    """Build every stale role in `options.roles`, one at a time, and with --format disk
    assemble every stale whole-disk image; report the fresh ones."""
    env = dict(os.environ) if env is None else env
    _put_right(options, console, caches=False)
    steps = plan(options)
    stale = [s for s in steps if s.reason is not None]
    disks = [s for s in steps if s.disk_reason is not None]
    if stale or disks:
        _put_right(options, console, caches=True)
        options.images_dir.mkdir(parents=True, exist_ok=True)
        prereqs.check_build(
            options.images_dir, fmt=options.fmt, path=env.get("PATH"), dib=bool(stale)
        )
        if stale and options.offline:
            _check_offline(options)
    outcomes = []
    for step in steps:
        if step.reason is None:
            info = load_image_info(step.directory)
            console.print(
                f"[green]{step.role}[/]: up to date ({options.release}, key {step.key[:12]}), "
                f"nothing to do" + (" for its root filesystem" if step.disk_reason else "")
            )
            outcome = Outcome(step.role, False, info)
        else:
            outcome = build_one(step, options, console, env)
        if step.disk_reason is not None:
            outcome.info, outcome.disk_seconds = assemble_disk(
                step, outcome.info, options, console, env
            )
        outcomes.append(outcome)
    return outcomes


def check(options: Options, console: Console) -> list[str]:
    """Verify built images against their sha256; returns 'role: file' for every mismatch."""
    from builder.images.contract import verify

    bad = []
    for role in options.roles:
        directory = image_dir(options.release, role, options.images_dir)
        if not (directory / IMAGE_JSON).is_file():
            console.print(f"[yellow]{role}[/]: not built ({directory})")
            bad.append(f"{role}: not built")
            continue
        info = load_image_info(directory)
        wrong = verify(info)
        if wrong:
            console.print(f"[red]{role}[/]: sha256 mismatch: {', '.join(wrong)}")
            bad.extend(f"{role}: {name}" for name in wrong)
            continue
        console.print(f"[green]{role}[/]: {len(info.sha256)} files match their sha256")
        if info.disk is not None and info.disk_path is not None:
            problems = disk.check(info.disk, info.disk_path, _tool_env(dict(os.environ)), directory)
            if problems:
                console.print(f"[red]{role}[/]: whole-disk image: {'; '.join(problems)}")
                bad.extend(f"{role}: {p}" for p in problems)
            else:
                summary = disk.summary(info.disk)
                console.print(f"[green]{role}[/]: {summary}: its GPT is as image.json says")
    return bad
