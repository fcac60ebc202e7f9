# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The option and requirement of every module of tenfold.stack that talks to a Docker engine."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  docker_host:
    description: Docker engine to talk to; the environment's (C(DOCKER_HOST) or the local socket) by default.
    type: str
requirements:
  - docker (the Docker SDK for Python) on the target host
"""
