"""What ``codeswarm doctor`` asks a compute node: does it see the workspace, run codex, reach
the model?

Run under ``srun`` as ``python3 - --token-file F --token T --codex PATH [--endpoint URL]``
with this file on stdin (on the local backend, as a plain process): it must not be imported
from the workspace whose sharing it checks. It prints one JSON object on
stdout, one entry per probe, each ``{"ok": bool, "detail": str}``, and exits 0: the verdicts
are the router's to judge and explain. Standard library only, Python 3.8+.

The sender may put ``PROBE_ENV = {...}`` before this source: the network variables of
agent.env (proxies, CA files), applied to the request as the worker applies them to codex
("$NAME" copies NAME from this node's environment). On stdin, not the command line, so a
proxy's credentials do not show in ``ps`` or Slurm's accounting.
"""

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

HTTP_TIMEOUT = 10.0
CODEX_TIMEOUT = 60.0


def shared(token_file, token):
    """Whether the file the login node wrote is here, with what it wrote."""
    try:
        with open(token_file, encoding="utf-8") as f:
            seen = f.read().strip()
    except OSError as exc:
        return {"ok": False, "detail": "cannot read %s here: %s" % (token_file, exc.strerror)}
    if seen != token:
        return {"ok": False, "detail": "%s holds %r, not what was written" % (token_file, seen)}
    return {"ok": True, "detail": "sees %s" % token_file}


def codex_version(codex):
    """``codex --version`` as this node runs it."""
    try:
        done = subprocess.run(
            [codex, "--version"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=CODEX_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "detail": "cannot run %s: %s" % (codex, exc)}
    out = (done.stdout or done.stderr).decode("utf-8", "replace").strip()
    if done.returncode != 0:
        return {"ok": False, "detail": "%s --version exited %d: %s" % (codex, done.returncode, out)}
    return {"ok": True, "detail": out}


def endpoint(base_url):
    """One GET of ``<base_url>/models``: any HTTP answer (even 401) means the server is there.

    Credentials are not sent: this tells a network problem from a key problem, which codex
    reports itself on the first turn.
    """
    url = base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer:
            return {"ok": True, "detail": "GET %s: HTTP %d" % (url, answer.status)}
    except urllib.error.HTTPError as exc:
        return {"ok": True, "detail": "GET %s: HTTP %d (the server answers)" % (url, exc.code)}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"ok": False, "detail": "GET %s: %s" % (url, reason)}


def apply_env(env, environ):
    """Set agent.env's variables in ``environ``, as ``hpc.codex_home.codex_environment`` does."""
    base = dict(environ)
    for name, value in env.items():
        if value.startswith("$"):
            if value[1:] in base:
                environ[name] = base[value[1:]]
        else:
            environ[name] = value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="hpc.doctor_probe")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--codex", required=True)
    parser.add_argument("--endpoint")
    args = parser.parse_args(argv)
    apply_env(globals().get("PROBE_ENV") or {}, os.environ)
    found = {
        "shared": shared(args.token_file, args.token),
        "codex": codex_version(args.codex),
        "python": {"ok": True, "detail": sys.version.split()[0]},
    }
    if args.endpoint:
        found["endpoint"] = endpoint(args.endpoint)
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
