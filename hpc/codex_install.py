"""Install a pinned Codex CLI into the cluster directory, once, on the login node.

Run as ``python3 -m hpc.codex_install --dir <cluster_dir>/codex --version <npm version>`` by
the router's prepare() when ``agent.codex_version`` is set. npm runs on the login node, which
usually has the network that compute nodes lack; the binary lands on the shared filesystem.

Several routers may prepare at once, so the install runs under an exclusive lock, into a
temporary directory renamed into place when complete: a version directory that exists is
whole, and is used as it is. Prints the codex binary's path on stdout; on failure (no npm,
the install fails, the binary does not run) exits 2 with the reason on stderr.
"""

import argparse
import fcntl
import glob
import os
import shutil
import subprocess
import sys

from .private import UMASK, private_dir

PACKAGE = "@openai/codex"


class InstallError(Exception):
    """The pinned codex cannot be installed; the message says what to do."""


def codex_binary(prefix):
    """The native binary under an npm prefix (static, no Node at run time), else the wrapper."""
    native = glob.glob(os.path.join(prefix, "node_modules/@openai/codex-*/vendor/*/bin/codex"))
    for path in [*sorted(native), os.path.join(prefix, "node_modules/.bin/codex")]:
        if os.access(path, os.X_OK):
            return path
    return None


def install(root, version, timeout=900):
    """``root/<version>``'s codex binary, installing ``@openai/codex@<version>`` if needed."""
    private_dir(root)
    prefix = os.path.join(root, version)
    with open(os.path.join(root, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(prefix):
            _npm_install(prefix, version, timeout)
    binary = codex_binary(prefix)
    if binary is None:
        raise InstallError("%s holds no codex binary: remove it to install again" % prefix)
    return binary


def _npm_install(prefix, version, timeout):
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError(
            "npm is not on PATH on the login node, so agent.codex_version cannot be installed: "
            "make npm available to non-interactive SSH commands there, or set agent.codex_path "
            "to a codex binary the compute nodes can run"
        )
    tmp = "%s.tmp.%d" % (prefix, os.getpid())
    # npm's own package.json here, not --prefix: that would also move npm's global config
    # (a site's cafile or proxy), and npm would look for a project above otherwise.
    private_dir(tmp)
    with open(os.path.join(tmp, "package.json"), "w") as f:
        f.write('{"private": true}\n')
    argv = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
    argv.append("%s@%s" % (PACKAGE, version))
    try:
        # optional dependencies must stay: the native binary is one
        done = subprocess.run(
            argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InstallError(
            "npm install %s@%s took over %d s" % (PACKAGE, version, timeout)
        ) from None
    if done.returncode != 0:
        problem = "exit %d: %s" % (done.returncode, done.stdout.decode("utf-8", "replace")[-2000:])
    else:
        binary = codex_binary(tmp)
        problem = _version_problem(binary) if binary else "the package has no codex binary"
    if problem:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InstallError("npm install %s@%s failed: %s" % (PACKAGE, version, problem.strip()))
    os.replace(tmp, prefix)


def _version_problem(binary):
    """Why ``binary --version`` does not work, or "" if it does."""
    try:
        done = subprocess.run(
            [binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
        )
    except OSError as exc:
        return "%s does not run: %s" % (binary, exc)
    if done.returncode != 0:
        return "%s --version: %s" % (binary, done.stdout.decode("utf-8", "replace").strip())
    return ""


def main(argv=None):
    os.umask(UMASK)
    parser = argparse.ArgumentParser(prog="python3 -m hpc.codex_install")
    parser.add_argument("--dir", required=True, help="where versions are installed")
    parser.add_argument("--version", required=True, help="the @openai/codex npm version")
    args = parser.parse_args(argv)
    try:
        print(install(args.dir, args.version))
    except (InstallError, OSError) as exc:
        print("codex_install: %s" % exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
