# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Code shared by tenfold's frontend and backend apps (copied into both images)."""
