"""A node's private CODEX_HOME and the config.toml written into it from the agent settings.

Each node gets its own CODEX_HOME: app-servers sharing one login race to refresh its token.
The config's ``agent.config`` block is passed through to config.toml verbatim, which is how a
site points codex at its own model server.
"""

import json
import os
import re

from .private import private_dir

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

# Settings that keep codex from reaching the internet at start-up or sourcing a login shell on
# every node; a site can override any of them in agent.config.
QUIET_DEFAULTS = {
    "check_for_update_on_startup": False,
    "analytics": {"enabled": False},
    "features": {"plugins": False, "apps": False, "shell_snapshot": False},
}


def _key(name):
    # fullmatch: a "$"-anchored match would pass "model\n" as a bare key and break the file.
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join("%s = %s" % (_key(k), _value(v)) for k, v in value.items()) + "}"
    raise ValueError("cannot write %r to TOML" % (value,))


def to_toml(data, prefix=()):
    """Render a JSON-like dict as TOML: scalars first, then one [table] per nested dict."""
    lines = []
    tables = []
    for name, value in data.items():
        if isinstance(value, dict):
            tables.append((name, value))
        else:
            lines.append("%s = %s" % (_key(name), _value(value)))
    for name, value in tables:
        path = (*prefix, name)
        lines.append("")
        lines.append("[%s]" % ".".join(_key(part) for part in path))
        lines.append(to_toml(value, path).strip("\n"))
    return "\n".join(lines).strip("\n") + "\n"


def merge(base, override):
    """``override`` laid over ``base``, nested tables merged key by key."""
    out = dict(base)
    for name, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = merge(out[name], value)
        else:
            out[name] = value
    return out


def prepare_codex_home(path, agent):
    """Create ``path`` (0700) and write config.toml for the agent settings dict ``agent``.

    Approval policy and sandbox travel in ``thread/start`` instead: config.toml spells them
    differently and rejects values (``untrusted``) that the protocol accepts.
    """
    private_dir(path)
    settings = dict(QUIET_DEFAULTS)
    if agent.get("model"):
        settings["model"] = agent["model"]
    settings = merge(settings, agent.get("config") or {})
    target = os.path.join(path, "config.toml")
    tmp = target + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(to_toml(settings))
    os.replace(tmp, target)
    return target


def codex_environment(agent, base_env):
    """The environment codex runs with: the worker's, plus agent.env ("$NAME" copies NAME)."""
    env = dict(base_env)
    for name, value in (agent.get("env") or {}).items():
        if value.startswith("$"):
            source = value[1:]
            if source in base_env:
                env[name] = base_env[source]
        else:
            env[name] = value
    return env
