"""`lab repo`, and the repository steps the lab commands take for plain nodes.

A plain node (topology `image: plain`) installs its role's packages on first boot from the
lab's repository (builder/aptrepo.py). `lab up` makes it (or brings it up to date) before the
seeds, which pin its key, and serves it on the host's management address before any node
starts (builder/repo_server.py). `lab start`, `lab restore` and `lab up --from` serve it again
before their nodes start (a node whose first boot stopped mid-install resumes it); `lab stop`
stops the server once every node of the lab is off, and `lab down` with the lab. `lab repo`
makes it alone, and `--output DIR` copies the repository for a site's own web server.
"""

from __future__ import annotations

from pathlib import Path

import click

from builder import aptrepo, repo_server
from builder.cli.common import Lab, Target, lab_lock, out, step, topology_options
from builder.errors import UsageError
from builder.plain import PLAIN


def prepare(lab: Lab, images_dir: Path | None) -> aptrepo.Repository | None:
    """The repository for the lab's plain nodes, up to date; None when it has none."""
    if not any(n.plain for n in lab.plan.nodes):
        return None
    repo = aptrepo.ensure(lab.plan, lab.state, images_dir)
    what = "made" if repo.changed else "up to date"
    step(
        f"repository {what}: {repo.packages} packages ({repo.size / (1 << 20):.0f} MiB) of the "
        f"{', '.join(repo.roles)} image(s), signed by {repo.fingerprint[-16:]}, in {repo.directory}"
    )
    return repo


def serve(lab: Lab, repo: aptrepo.Repository | None) -> repo_server.Running | None:
    """Serve the repository on the host's management address, unless the topology names
    another place (lab.repository) for it."""
    if repo is None:
        return None
    return _serve(lab, repo.directory)


def resume(lab: Lab, images_dir: Path | None = None) -> repo_server.Running | None:
    """`lab start`, `lab restore` and `lab up --from`: serve the lab's repository again, before
    its nodes start. The one `lab up` made is served as it is (the nodes' seeds pin its key,
    it holds their role images' packages), so no role image is needed; made first when there
    is none."""
    if not any(n.plain for n in lab.plan.nodes):
        return None
    if lab.plan.topology.lab.repository is not None:
        return _serve(lab, lab.state.repo_dir)  # says where the nodes install from instead
    if (lab.state.repo_dir / "InRelease").is_file():
        step(f"repository in {lab.state.repo_dir}, as 'lab up' made it")
        return _serve(lab, lab.state.repo_dir)
    return serve(lab, prepare(lab, images_dir))


def _serve(lab: Lab, directory: Path) -> repo_server.Running | None:
    topo = lab.plan.topology
    if topo.lab.repository is not None:
        step(
            f"plain nodes install from {topo.lab.repository} (lab.repository): this host does "
            "not serve it; 'lab repo --output DIR' copies the repository for that server"
        )
        return None
    bind = str(topo.management.host_address)
    found, started = repo_server.ensure(
        lab.state.repo_server, lab.state.repo_server_log, directory, bind, PLAIN.port
    )
    state = "serving" if started else "already serving"
    step(f"repository server: {state} {found.url} on the management network (pid {found.pid})")
    return found


def stop(lab: Lab) -> None:
    """Stop the repository server, when one runs for the lab."""
    pid = repo_server.stop(lab.state.repo_server)
    if pid is not None:
        step(f"repository server (pid {pid}): stopped")


@click.command("repo")
@topology_options
@click.option("--images-dir", type=Target("dir"), default=None)
@click.option(
    "-o",
    "--output",
    type=Target("dir"),
    default=None,
    help="Also copy the repository here, real files in place of its links into the .deb "
    "cache, for a web server elsewhere (docs/bare-metal.md).",
)
def repo(lab: Lab, images_dir: Path | None, output: Path | None) -> None:
    """Make (or bring up to date) the package repository plain nodes install from, signed with
    the lab's key; 'lab up' also serves it."""
    if not any(n.plain for n in lab.plan.nodes):
        raise UsageError(
            f"{lab.topology_file}: no node has 'image: plain', so no repository is needed",
            fix="give a compute or block node 'image: plain' (docs/bare-metal.md)",
        )
    with lab_lock(lab):
        made = prepare(lab, images_dir)
        assert made is not None
        if output is not None:
            copied = aptrepo.export(made.directory, output)
            step(f"copied to {output} ({copied / (1 << 20):.0f} MiB written)")
    out.print(f"plain nodes install from {made.url}", soft_wrap=True)
    out.print(f"key {made.fingerprint} ({aptrepo.KEYRING} in the repository)", soft_wrap=True)


def register(group: click.Group) -> None:
    group.add_command(repo)
