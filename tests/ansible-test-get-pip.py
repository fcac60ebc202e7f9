"""ansible-test's pip bootstrap (what get-pip.py does for its sanity venvs), from PyPI's pip wheel.

ansible-test downloads get-pip.py from ci-files.testing.ansible.com, which this machine cannot reach; it
uses ~/.ansible/test/cache/get_pip_<version>.py instead when that file exists. `make sanity` copies this
script there, with PIP_WHEEL set to the pip wheel it downloaded from PyPI into the same directory.
"""

import sys

PIP_WHEEL = ""  # set by make sanity

# get-pip.py's own options; pip install does not know them.
OWN = ("--no-setuptools", "--no-wheel")

if __name__ == "__main__":
    sys.path.insert(0, PIP_WHEEL)
    from pip._internal.cli.main import main

    args = [arg for arg in sys.argv[1:] if arg not in OWN]
    sys.exit(main(["install", "--upgrade", "--force-reinstall", *args]))
