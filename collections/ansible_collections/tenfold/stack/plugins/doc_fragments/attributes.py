# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""What check_mode and diff_mode mean for every module of tenfold.stack; each module says its support."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and say what would change without changing it.
  diff_mode:
    description: Returns what it changed (or would change, in check mode) when run with --diff.
"""
