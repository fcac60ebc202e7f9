"""tenfold.stack.lb_update's pure parts: which files change, the validation container's mounts, its
messages."""

from __future__ import annotations

import pytest
from conftest import load_plugin

mod = load_plugin("modules", "lb_update")

PARAMS = {
    "live_dir": "/etc/tenfold/s/nginx",
    "staging_dir": "/etc/tenfold/s/nginx-staging",
    "conf_path": "/etc/tenfold-nginx/",
    "mounts": ["/etc/tenfold/s/tls:/etc/tenfold-tls"],
}


def test_only_files_whose_content_differs_change():
    live = {"upstreams.conf": "a\n", "new.conf": None, "same.conf": "x\n"}
    new = {"upstreams.conf": "b\n", "new.conf": "n\n", "same.conf": "x\n"}
    assert mod.changed_files(live, new) == ["upstreams.conf", "new.conf"]
    [diff, _] = mod.diffs(live, new, ["upstreams.conf", "new.conf"], "/live")
    assert diff == {
        "before_header": "/live/upstreams.conf",
        "after_header": "/live/upstreams.conf",
        "before": "a\n",
        "after": "b\n",
    }


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../upstreams.conf", "errors/../../x", "~root/x"])
def test_a_name_outside_the_configuration_directory_is_refused(name):
    with pytest.raises(mod.UpdateError, match="relative to the configuration directory"):
        mod.check_names({name: "x"})


def test_content_must_be_text():
    with pytest.raises(mod.UpdateError, match="must be a string"):
        mod.check_names({"upstreams.conf": {"not": "text"}})


def test_the_staged_files_are_laid_over_the_live_directory():
    assert mod.validation_mounts(PARAMS, ["upstreams.conf"]) == [
        {"source": "/etc/tenfold/s/nginx", "target": "/etc/tenfold-nginx"},
        {
            "source": "/etc/tenfold/s/nginx-staging/upstreams.conf",
            "target": "/etc/tenfold-nginx/upstreams.conf",
        },
        {"source": "/etc/tenfold/s/tls", "target": "/etc/tenfold-tls"},
    ]


@pytest.mark.parametrize("spec", ["/only-one-path", "relative:/x", "/x:relative"])
def test_a_malformed_extra_mount_is_refused(spec):
    with pytest.raises(mod.UpdateError, match="host_path:container_path"):
        mod.validation_mounts({**PARAMS, "mounts": [spec]}, [])


def test_nginx_lines_come_first_in_a_refusal():
    lines = mod.nginx_message(b'nginx: [emerg] invalid parameter "x"\n\nnginx: configuration test failed\n')
    assert str(mod.refused(lines, "not promoted")).splitlines() == [
        'nginx: [emerg] invalid parameter "x"',
        "nginx: configuration test failed",
        "not promoted",
    ]
