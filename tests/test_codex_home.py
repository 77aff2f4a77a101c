"""config.toml rendering: a key that is not a bare word is quoted, or the file would not parse."""

import pytest

from codeswarm.hpc.codex_home import to_toml


@pytest.mark.parametrize(
    ("key", "written"),
    [
        ("model", "model"),
        ("base-url_2", "base-url_2"),
        ("model\n", '"model\\n"'),
        ("a b", '"a b"'),
        ("a.b", '"a.b"'),
        ("", '""'),
    ],
)
def test_keys_are_bare_only_when_toml_allows(key, written):
    assert to_toml({key: 1, "table": {key: 2}}) == f"{written} = 1\n\n[table]\n{written} = 2\n"
