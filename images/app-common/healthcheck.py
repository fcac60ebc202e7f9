#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Container healthcheck (/usr/local/bin/healthcheck): exit 0 when GET /health on $PORT answers 200."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8080')}/health"
    # No proxy: a proxy set in the container's environment must not answer for the app.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "2"))) as response:
            if response.status == 200:
                return 0
            print(f"{url} answered {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
