#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup
short_description: Make, verify and restore compressed backups of a tenfold stack's files
description:
  - O(state=present) writes C(<backup_dir>/<stack>-<UTC time>.tar.gz) (mode 0600) holding every file of
    O(sources) with its mode, owner and group, and a manifest naming the format, the stack, the replica count
    of each of O(pools) (the scale state, from O(scale)) and the SHA-256 of every file. Then only the
    newest O(retention) archives of the stack are kept; other files in O(backup_dir) are left alone.
  - O(state=verified) reads the archive given by O(src) to its end and checks it against its manifest. A
    truncated archive, a member whose checksum differs, a member added or missing, a link, an unsafe path,
    an archive without a tenfold manifest or one of another stack is rejected with the reason; nothing
    changes.
  - O(state=extracted) verifies, then writes the sources named in O(only) under O(dest)C(/<source>), so
    they can be checked (C(nginx -t)) before anything live changes.
  - O(state=restored) verifies, then writes back every file that differs from the archive to the path
    O(sources) gives for its source, with its recorded mode, owner and group. All files are written to
    temporary files first and renamed into place only when every one was written, so a failure changes
    nothing.
version_added: "0.2.0"
author: tenfold contributors (!UNKNOWN)
options:
  state:
    description: What to do.
    type: str
    choices: [present, verified, extracted, restored]
    default: present
  stack:
    description: Name of the stack. Names the archives, and an archive of another stack is refused.
    type: str
    required: true
  backup_dir:
    description:
      - Directory of the stack's archives (created with mode 0700 by O(state=present)).
      - Where O(src=latest) is looked up.
    type: path
  src:
    description:
      - The archive to verify, extract or restore; C(latest) is the stack's newest in O(backup_dir).
      - A bare file name is taken from O(backup_dir).
    type: str
  sources:
    description:
      - What O(state=present) backs up, and where O(state=restored) writes each source back to.
      - A source that does not exist is left out of the archive (and reported in RV(missing)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The source's name in the archive (lower-case letters, digits, C(_), C(.), C(-)).
        type: str
        required: true
      path:
        description: Absolute path of a directory (everything under it) or of a file.
        type: path
        required: true
      exclude:
        description: Glob patterns of paths (relative to the source) or file names left out.
        type: list
        elements: str
        default: []
  only:
    description: With O(state=extracted) or O(state=restored), only these sources (default every one given).
    type: list
    elements: str
  dest:
    description: With O(state=extracted), the directory the sources are extracted to.
    type: path
  retention:
    description: With O(state=present), how many of the stack's newest archives are kept (at least 1).
    type: int
    default: 7
  pools:
    description: With O(state=present), the pools whose replica counts are recorded.
    type: list
    elements: str
    default: []
  scale:
    description:
      - With O(state=present), each pool's replica count across its Docker hosts, as the
        C(tenfold.stack.pool_sizes) filter counts what M(tenfold.stack.pool_info) read on them. Each of
        O(pools) must be in it; a pool no Docker host was read for fails the backup, rather than record a size
        nobody counted.
    type: dict
    default: {}
extends_documentation_fragment:
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: partial
    details: O(state=restored) lists the files it would change.
notes:
  - Without a key, a manifest cannot prove who made the archive; keep O(backup_dir) readable by root only.
"""

EXAMPLES = r"""
- name: Back up the load balancer's config and TLS material, keeping the newest 7
  tenfold.stack.backup:
    stack: tenfold
    backup_dir: /var/backups/tenfold
    retention: 7
    pools: [frontend, backend]
    scale: {frontend: 3, backend: 4}
    sources:
      - {name: nginx, path: /etc/tenfold/tenfold/nginx}
      - {name: tls, path: /etc/tenfold/tenfold/tls}
  register: backup

- name: Check the newest backup without changing anything
  tenfold.stack.backup:
    state: verified
    stack: tenfold
    backup_dir: /var/backups/tenfold
    src: latest
  register: verified

- name: Put the TLS material back as it was
  tenfold.stack.backup:
    state: restored
    stack: tenfold
    src: "{{ verified.path }}"
    only: [tls]
    sources:
      - {name: tls, path: /etc/tenfold/tenfold/tls}
"""

RETURN = r"""
path:
  description: The archive written, verified, extracted or restored.
  returned: always
  type: str
  sample: /var/backups/tenfold/tenfold-20261201T020000.123Z.tar.gz
manifest:
  description: The manifest without its file list (format, version, stack, created, scale, sources, counts).
  returned: when an archive was written or verified
  type: dict
  sample: {"format": "tenfold-backup", "version": 1, "stack": "tenfold", "created": "2026-12-01T02:00:00Z",
           "scale": {"frontend": 3, "backend": 4}, "sources": {"tls": {"path": "/etc/tenfold/tenfold/tls",
           "type": "dir"}}, "files": 2, "bytes": 3051}
scale:
  description: The replica count of each pool, as the archive records it.
  returned: state=present
  type: dict
  sample: {"frontend": 3, "backend": 4}
removed:
  description: Archives removed by retention (in check mode, those it would remove).
  returned: state=present
  type: list
  elements: str
missing:
  description: Sources that do not exist and were left out of the archive.
  returned: state=present
  type: list
  elements: str
left_out:
  description:
    - Paths left out because they are links or special files, or vanished while being read.
    - Not named C(skipped), which Ansible reads as the task's own and then ignores C(changed_when) and
      C(failed_when).
  returned: state=present
  type: list
  elements: str
changed_files:
  description: Paths written (in check mode, those that would be).
  returned: state=extracted or state=restored
  type: list
  elements: str
not_restored:
  description: Sources in the archive that O(sources) gives no path for, so were left alone.
  returned: state=restored
  type: list
  elements: str
"""

import os
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.backup import (
    BackupError,
    Source,
    archive_name,
    backups,
    check_stack,
    expired,
    plan_restore,
    resolve,
    restore,
    verify,
    write_archive,
)


def argument_spec() -> dict:
    return {
        "state": {
            "type": "str",
            "choices": ["present", "verified", "extracted", "restored"],
            "default": "present",
        },
        "stack": {"type": "str", "required": True},
        "backup_dir": {"type": "path"},
        "src": {"type": "str"},
        "sources": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "name": {"type": "str", "required": True},
                "path": {"type": "path", "required": True},
                "exclude": {"type": "list", "elements": "str", "default": []},
            },
        },
        "only": {"type": "list", "elements": "str"},
        "dest": {"type": "path"},
        "retention": {"type": "int", "default": 7},
        "pools": {"type": "list", "elements": "str", "default": []},
        "scale": {"type": "dict", "default": {}},
    }


def scale_state(pools: list[str], counted: dict) -> dict[str, int]:
    """Each pool's recorded replica count, from what the Docker hosts reported."""
    unread = [pool for pool in pools if pool not in counted]
    if unread:
        raise BackupError(
            f"no Docker host reported pool {', '.join(unread)}: run backup.yml with the tenfold_docker hosts"
        )
    try:
        scale = {pool: int(counted[pool]) for pool in pools}
    except (TypeError, ValueError) as exc:
        raise BackupError(f"scale must map pools to whole numbers: {exc}") from exc
    if any(count < 0 for count in scale.values()):
        raise BackupError(f"scale must not be negative: {scale}")
    return scale


def present(module: AnsibleModule, stack: str, sources: list[Source]) -> dict:
    params = module.params
    directory = params["backup_dir"]
    if not directory:
        raise BackupError("backup_dir is required to write a backup")
    if params["retention"] < 1:
        raise BackupError(f"retention={params['retention']} must keep at least 1 backup")
    path = os.path.join(directory, archive_name(stack, datetime.now(UTC)))
    scale = scale_state(params["pools"], params["scale"])
    if module.check_mode:
        kept = [path, *backups(directory, stack)]
        removed = kept[params["retention"] :]
        return {
            "changed": True,
            "path": path,
            "scale": scale,
            "removed": removed,
            "missing": [],
            "left_out": [],
        }
    os.makedirs(directory, mode=0o700, exist_ok=True)
    manifest, missing, left_out = write_archive(path, stack, sources, scale, datetime.now(UTC))
    removed = expired(directory, stack, params["retention"])
    for old in removed:
        os.unlink(old)
    return {
        "changed": True,
        "path": path,
        "scale": scale,
        "manifest": manifest.summary(),
        "removed": removed,
        "missing": missing,
        "left_out": left_out,
    }


def targets_for(module: AnsibleModule, sources: list[Source], available: dict) -> dict[str, str]:
    names = module.params["only"]
    given = {s.name: s.path for s in sources}
    if names is None:
        return given
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise BackupError(f"only={names}: the archive has no source {', '.join(unknown)}")
    return {name: given[name] for name in names if name in given}


def extracted(module: AnsibleModule, path: str, manifest) -> dict:
    dest = module.params["dest"]
    if not dest:
        raise BackupError("dest is required to extract a backup")
    names = module.params["only"] or list(manifest.sources)
    unknown = sorted(set(names) - set(manifest.sources))
    if unknown:
        raise BackupError(f"only={names}: the archive has no source {', '.join(unknown)}")
    targets = {name: os.path.join(dest, name) for name in names}
    if module.check_mode:
        changed = [t for _entry, t in plan_restore(manifest, targets)]
    else:
        os.makedirs(dest, mode=0o700, exist_ok=True)
        changed = restore(path, manifest, targets)
    return {"changed": bool(changed), "path": path, "manifest": manifest.summary(), "changed_files": changed}


def restored(module: AnsibleModule, path: str, manifest, sources: list[Source]) -> dict:
    targets = targets_for(module, sources, manifest.sources)
    wanted = module.params["only"] or list(manifest.sources)
    not_restored = sorted(name for name in manifest.sources if name in wanted and name not in targets)
    if module.check_mode:
        changed = [t for _entry, t in plan_restore(manifest, targets)]
    else:
        changed = restore(path, manifest, targets)
    result = {
        "changed": bool(changed),
        "path": path,
        "manifest": manifest.summary(),
        "changed_files": changed,
        "not_restored": not_restored,
    }
    if module._diff and changed:
        result["diff"] = {"before": "", "after": "".join(f"restored {p}\n" for p in changed)}
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        stack = check_stack(params["stack"])
        sources = [Source(s["name"], s["path"], tuple(s["exclude"] or ())) for s in params["sources"]]
        if params["state"] == "present":
            module.exit_json(**present(module, stack, sources))
        path = resolve(params["src"], params["backup_dir"], stack)
        manifest = verify(path, stack)
        if params["state"] == "verified":
            module.exit_json(changed=False, path=path, manifest=manifest.summary())
        if params["state"] == "extracted":
            module.exit_json(**extracted(module, path, manifest))
        module.exit_json(**restored(module, path, manifest, sources))
    except BackupError as exc:
        verb = "written" if params["state"] == "present" else "used"
        module.fail_json(msg=f"backup not {verb}, nothing changed: {exc}")
    except OSError as exc:
        module.fail_json(msg=f"backup {params['state']} failed: {exc}; nothing was renamed into place")


if __name__ == "__main__":
    main()
