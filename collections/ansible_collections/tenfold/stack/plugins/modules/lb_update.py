#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lb_update
short_description: Change files of a running nginx LB's configuration, validated before they go live
description:
  - Replaces some files of the live configuration directory of a running nginx container (the upstreams, when
    a pool is scaled) in one step, in this order, stopping at the first failure.
  - Compares each file's new content with the live one. When nothing differs, nothing happens.
  - Writes the new files into O(staging_dir) and runs C(nginx -t) in a throwaway container of O(image) that
    sees the live directory with the staged files laid over it. If nginx rejects it, the module fails with
    nginx's own message and the live directory and the running LB are untouched.
  - Promotes the staged files into O(live_dir) (each by an atomic rename), runs C(nginx -t) inside the
    running container O(container), and reloads it gracefully (C(nginx -s reload); never a restart). If
    that test or the reload fails, the previous files are put back and the module fails with nginx's message;
    the LB keeps serving the configuration it loaded last.
  - Whatever the outcome, the staged copies of O(files) end as the live ones, so the staging directory holds
    no rejected attempt and no stale copy.
  - With O(promote=false) it only runs C(nginx -t) of O(live_dir), with O(files) laid over if any, in the
    throwaway container, and does so on every run (a configuration that failed before must fail again). The
    nginx_lb role validates each complete configuration it renders this way before promoting it.
version_added: "0.1.0"
author: tenfold contributors (!UNKNOWN)
options:
  container:
    description: Name of the running LB container. Required with O(promote=true).
    type: str
  promote:
    description: Promote and reload after the validation; V(false) validates only.
    type: bool
    default: true
  image:
    description: Image of the throwaway validation container (the LB's own image, so the same nginx judges).
    type: str
    required: true
  live_dir:
    description:
      - Live configuration directory on the host; it must hold C(nginx.conf). With O(promote=false), the
        directory to validate.
    type: path
    required: true
  staging_dir:
    description: Directory on the host where the new files are staged and validated first.
    type: path
    required: true
  conf_path:
    description: Where the containers see O(live_dir).
    type: str
    default: /etc/tenfold-nginx
  files:
    description: The files to change, by name relative to O(live_dir), with their new content.
    type: dict
    required: true
  mounts:
    description: Further read-only bind mounts of the validation container, as C(host_path:container_path)
      (the TLS material the configuration names, say).
    type: list
    elements: str
    default: []
  tmpfs:
    description: Paths the validation container gets as empty tmpfs (the log directory, say).
    type: list
    elements: str
    default: []
  capabilities:
    description: Capabilities the validation container keeps; it drops all others.
    type: list
    elements: str
    default: []
  labels:
    description: Labels of the validation container.
    type: dict
    default: {}
extends_documentation_fragment:
  - tenfold.stack.docker
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
    details: In check mode it compares and reports the diff; it writes, validates and reloads nothing.
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Point the LB at the pools' new members
  tenfold.stack.lb_update:
    container: tenfold-lb
    image: tenfold/nginx:local
    live_dir: /etc/tenfold/tenfold/nginx
    staging_dir: /etc/tenfold/tenfold/nginx-staging
    files:
      upstreams.conf: "{{ lookup('ansible.builtin.template', 'upstreams.conf.j2') }}"
    mounts:
      - /etc/tenfold/tenfold/tls:/etc/tenfold-tls
    tmpfs:
      - /var/log/tenfold-nginx
    capabilities: [CHOWN, SETGID, SETUID]

- name: Validate a complete rendered configuration, promoting nothing
  tenfold.stack.lb_update:
    promote: false
    image: tenfold/nginx:local
    live_dir: /etc/tenfold/tenfold/nginx-staging
    staging_dir: /etc/tenfold/tenfold/nginx-staging
    files: {}
    mounts:
      - /etc/tenfold/tenfold/tls:/etc/tenfold-tls
"""

RETURN = r"""
validated:
  description: Whether nginx -t accepted the configuration (false when it did not run, as in check mode).
  returned: always
  type: bool
changed_files:
  description: Names of the files whose content changed (promoted, or that would be in check mode).
  returned: always
  type: list
  elements: str
  sample: [upstreams.conf]
reloaded:
  description: Whether the running LB was reloaded.
  returned: always
  type: bool
"""

import os
import tempfile
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.engine import DockerException, NotFound, client
from ansible_collections.tenfold.stack.plugins.module_utils.pool import PoolError


class UpdateError(Exception):
    """The change was refused; the message says why and what is live."""


def argument_spec() -> dict:
    return {
        "container": {"type": "str"},
        "promote": {"type": "bool", "default": True},
        "image": {"type": "str", "required": True},
        "live_dir": {"type": "path", "required": True},
        "staging_dir": {"type": "path", "required": True},
        "conf_path": {"type": "str", "default": "/etc/tenfold-nginx"},
        "files": {"type": "dict", "required": True},
        "mounts": {"type": "list", "elements": "str", "default": []},
        "tmpfs": {"type": "list", "elements": "str", "default": []},
        "capabilities": {"type": "list", "elements": "str", "default": []},
        "labels": {"type": "dict", "default": {}},
        "docker_host": {"type": "str"},
    }


# --- pure parts -----------------------------------------------------------------------------------
def check_names(files: dict) -> None:
    """Each name is a plain relative path inside the configuration directory, and each content a string."""
    for name, content in files.items():
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts or name.startswith("~"):
            raise UpdateError(f"files: {name!r} must be a path relative to the configuration directory")
        if not isinstance(content, str):
            raise UpdateError(f"files: the content of {name!r} must be a string")


def changed_files(live: dict[str, str | None], new: dict[str, str]) -> list[str]:
    """Names whose new content differs from the live one (None: not live yet), in the order given."""
    return [name for name, content in new.items() if live.get(name) != content]


def diffs(live: dict[str, str | None], new: dict[str, str], names: list[str], live_dir: str) -> list[dict]:
    return [
        {
            "before_header": f"{live_dir}/{name}",
            "after_header": f"{live_dir}/{name}",
            "before": live.get(name) or "",
            "after": new[name],
        }
        for name in names
    ]


def validation_mounts(params: dict, names: list[str]) -> list[dict]:
    """Bind mounts of the validation container: the live directory, the staged files over it, the extras."""
    conf = params["conf_path"].rstrip("/")
    mounts = [{"source": params["live_dir"], "target": conf}]
    mounts += [{"source": f"{params['staging_dir']}/{name}", "target": f"{conf}/{name}"} for name in names]
    for spec in params["mounts"]:
        source, sep, target = spec.partition(":")
        if not sep or not source.startswith("/") or not target.startswith("/"):
            raise UpdateError(f"mounts: {spec!r} must be host_path:container_path, both absolute")
        mounts.append({"source": source, "target": target})
    return mounts


def nginx_message(output: bytes | str | None) -> list[str]:
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else (output or "")
    return [line for line in text.splitlines() if line.strip()]


def refused(nginx_lines: list[str], what_is_live: str) -> UpdateError:
    """nginx's own lines first, then what happened to the change."""
    return UpdateError("\n".join([*nginx_lines, what_is_live]))


# --- I/O --------------------------------------------------------------------------------------------
def read_live(live_dir: Path, names: list[str]) -> dict[str, str | None]:
    live: dict[str, str | None] = {}
    for name in names:
        try:
            live[name] = (live_dir / name).read_text()
        except FileNotFoundError:
            live[name] = None
    return live


def write_file(path: Path, content: str) -> None:
    """Write `content` to `path` by an atomic rename, mode 0644 (a reader sees the old file or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def restore(live_dir: Path, previous: dict[str, str | None]) -> None:
    for name, content in previous.items():
        if content is None:
            (live_dir / name).unlink(missing_ok=True)
        else:
            write_file(live_dir / name, content)


def nginx_t_throwaway(cli: Any, params: dict, names: list[str]) -> None:
    from docker.errors import ContainerError
    from docker.types import Mount

    conf = params["conf_path"].rstrip("/")
    mounts = [
        Mount(m["target"], m["source"], type="bind", read_only=True) for m in validation_mounts(params, names)
    ]
    try:
        cli.containers.run(
            params["image"],
            entrypoint=["nginx"],
            command=["-t", "-e", "/dev/null", "-c", f"{conf}/nginx.conf"],
            network_mode="none",
            cap_drop=["ALL"],
            cap_add=params["capabilities"] or None,
            security_opt=["no-new-privileges"],
            mounts=mounts,
            tmpfs={path: "" for path in params["tmpfs"]},
            labels=params["labels"],
            remove=True,
            stdout=False,
            stderr=True,
        )
    except ContainerError as exc:
        overlaid = f" with {', '.join(names)} from {params['staging_dir']}" if names else ""
        raise refused(
            nginx_message(exc.stderr) or [str(exc)],
            f"nginx -t rejected the configuration in {params['live_dir']}{overlaid}; it was not promoted and "
            "the running load balancer keeps its old configuration",
        ) from exc


def exec_nginx(container: Any, args: list[str], conf: str) -> tuple[int, list[str]]:
    code, output = container.exec_run(["nginx", *args, "-e", "/dev/null", "-c", f"{conf}/nginx.conf"])
    return code, nginx_message(output)


def sync_staging(live_dir: Path, staging_dir: Path, names: list[str]) -> None:
    """Leave each staged file as its live one, so that the staging directory, which the nginx_lb role renders
    into, holds no rejected attempt and no stale copy (a second site.yml run then changes nothing)."""
    if staging_dir.resolve() == live_dir.resolve():
        return
    for name, content in read_live(live_dir, names).items():
        staged = staging_dir / name
        if content is None:
            staged.unlink(missing_ok=True)
        elif not staged.is_file() or staged.read_text() != content:
            write_file(staged, content)


def update(module: AnsibleModule) -> dict:
    """Promote (or only validate) the files; the staged copies end as the live ones, whatever happened."""
    check_names(module.params["files"])
    if module.params["promote"] and not module.check_mode:
        try:
            return _update(module)
        finally:
            live, staging = Path(module.params["live_dir"]), Path(module.params["staging_dir"])
            if (live / "nginx.conf").is_file():
                sync_staging(live, staging, list(module.params["files"]))
    return _update(module)


def _update(module: AnsibleModule) -> dict:
    params = module.params
    files: dict = params["files"]
    live_dir, staging_dir = Path(params["live_dir"]), Path(params["staging_dir"])
    if not (live_dir / "nginx.conf").is_file():
        raise UpdateError(
            f"{live_dir}/nginx.conf does not exist: the load balancer is not set up yet. Run site.yml first."
        )
    if not params["promote"]:
        if module.check_mode:
            return {"changed": False, "changed_files": [], "reloaded": False, "validated": False}
        for name, content in files.items():
            write_file(staging_dir / name, content)
        nginx_t_throwaway(client(params["docker_host"]), params, list(files))
        return {"changed": False, "changed_files": [], "reloaded": False, "validated": True}

    live = read_live(live_dir, list(files))
    names = changed_files(live, files)
    result: dict[str, Any] = {
        "changed": bool(names),
        "changed_files": names,
        "reloaded": False,
        "validated": False,
    }
    if module._diff and names:
        result["diff"] = diffs(live, files, names, str(live_dir))
    if not names or module.check_mode:
        return result

    cli = client(params["docker_host"])
    try:
        container = cli.containers.get(params["container"])
    except NotFound as exc:
        raise UpdateError(
            f"the LB container {params['container']} does not exist: run site.yml first"
        ) from exc
    if container.status != "running":
        raise UpdateError(f"the LB container {params['container']} is {container.status}, not running")
    for name in names:
        write_file(staging_dir / name, files[name])
    nginx_t_throwaway(cli, params, names)
    result["validated"] = True

    previous = {name: live[name] for name in names}
    for name in names:
        write_file(live_dir / name, files[name])
    conf = params["conf_path"].rstrip("/")
    steps = ((["-t"], "rejected the live configuration"), (["-s", "reload"], "could not reload"))
    try:
        for args, what in steps:
            code, lines = exec_nginx(container, args, conf)
            if code != 0:
                raise refused(
                    lines,
                    f"nginx in {params['container']} {what}; the previous {', '.join(names)} was put back "
                    "and nginx keeps serving the configuration it loaded last",
                )
    except BaseException:
        restore(live_dir, previous)
        raise
    result["reloaded"] = True
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[("promote", True, ("container",))],
        supports_check_mode=True,
    )
    try:
        result = update(module)
    except (UpdateError, PoolError) as exc:
        module.fail_json(msg=str(exc), changed_files=[], reloaded=False)
    except (DockerException, OSError) as exc:
        module.fail_json(msg=f"{module.params['live_dir']}: {exc}", changed_files=[], reloaded=False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
