"""Config validation: every bad file names file, key and reason; secrets never leak."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import faultserver
import pytest

from aione_probe.cli import main
from aione_probe.config import load_config, parse_duration
from aione_probe.errors import ConfigError

BAD = sorted((Path(__file__).parent / "testdata" / "config").glob("*.toml"))
ROOT = Path(__file__).resolve().parent.parent


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_config_names_file_key_and_reason(path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert _expected(path) in message


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_check_config_exits_2_on_bad_config(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(path)]) == 2
    out = capsys.readouterr()
    assert str(path) in out.err
    assert "sk-nex-abcdef123456" not in out.err + out.out


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: \(file\): cannot read"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5s", True, "5 weeks"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_example_configs_are_valid() -> None:
    for path in sorted((ROOT / "examples").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.gateways, path


def test_defaults_and_lookups(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        """
[[gateways]]
name = "aione"
base_url = "https://api.nexara.net/v1/"
api_key_env = "AIONE_TEST_KEY"
[gateways.discovery]
include = ["claude-*", "gpt-*"]
exclude = ["*-preview"]
max_models = 2
[pricing."gpt-4o"]
input = 2.5
output = 10
[pricing."claude-*"]
input = 3
output = 15
cached_input = 0.3
"""
    )
    cfg = load_config(path)
    gw = cfg.gateways[0]
    assert gw.base_url == "https://api.nexara.net/v1"
    assert gw.auth_scheme == "bearer"
    assert gw.timeouts.first_token == 60.0
    assert gw.discovery.select(["gpt-4o", "claude-x-preview", "gemini", "claude-y", "gpt-5"]) == [
        "gpt-4o",
        "claude-y",
    ]
    price = cfg.price_for("gpt-4o")
    assert price is not None and price.cached_input == 2.5  # no discount unless configured
    claude = cfg.price_for("claude-sonnet-4")
    assert claude is not None and claude.cached_input == 0.3
    assert cfg.price_for("llama") is None
    assert cfg.storage_url() == f"sqlite:///{tmp_path / 'aione-probe.db'}"


def test_api_key_is_read_lazily_and_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "sk-nex-" + "s3cr3t" * 4
    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    path = tmp_path / "c.toml"
    path.write_text(
        f"""
[[gateways]]
name = "a"
base_url = "https://a.example/v1"
api_key_env = "AIONE_TEST_KEY"
[[gateways]]
name = "b"
base_url = "https://b.example/v1"
api_key_file = "{key_file}"
"""
    )
    monkeypatch.setenv("AIONE_TEST_KEY", secret)
    cfg = load_config(path)
    assert cfg.gateways[0].api_key() == secret
    assert cfg.gateways[1].api_key() == secret
    assert secret not in repr(cfg)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    assert "$AIONE_TEST_KEY (set)" in out.out


def test_unreadable_key_file_names_the_key_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        """
[[gateways]]
name = "b"
base_url = "https://b.example/v1"
api_key_file = "/nonexistent/key"
"""
    )
    cfg = load_config(path)
    with pytest.raises(ConfigError, match="api_key_file: cannot read"):
        cfg.gateways[0].api_key()


def _all_expected(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ")
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


CHECK = sorted((Path(__file__).parent / "testdata" / "config-check").glob("*.toml"))


def test_every_mistake_of_a_file_is_reported_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parent / "testdata" / "config" / "two-mistakes.toml"
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    for expected in _all_expected(path):
        assert any(line == f"config error {path}: {expected}" for line in lines), (expected, lines)


@pytest.mark.parametrize("path", CHECK, ids=lambda p: p.stem)
def test_check_config_names_each_unusable_key(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIONE_PROBE_TEST_UNSET_KEY", raising=False)
    monkeypatch.delenv("AIONE_PROBE_TEST_UNSET_MGMT", raising=False)
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    # One whole line per error, never folded at 80 columns (stderr is not a terminal here).
    for expected in _all_expected(path):
        assert any(line.startswith(f"config error {path}: {expected}") for line in lines), lines


def test_a_set_key_or_a_keyless_gateway_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[gateways]]\nname = "a"\nbase_url = "https://a.example/v1"\n'
        'api_key_env = "AIONE_PROBE_TEST_SET_KEY"\n'
        '[[gateways]]\nname = "b"\nbase_url = "http://127.0.0.1:9/v1"\nauth = "none"\n'
    )
    monkeypatch.setenv("AIONE_PROBE_TEST_SET_KEY", "sk-test-0123456789")
    assert main(["check-config", str(path)]) == 0
    monkeypatch.setenv("AIONE_PROBE_TEST_SET_KEY", "  ")
    assert main(["check-config", str(path)]) == 2


@pytest.mark.parametrize(
    ("source", "reason", "key"),
    [
        (
            'api_key_env = "AIONE_PROBE_TEST_UNSET_KEY"\n',
            "environment variable AIONE_PROBE_TEST_UNSET_KEY is not set",
            "api_key_env",
        ),
        ("", "no API key source", "auth"),  # not declared keyless: not implicitly keyless
    ],
    ids=["unset-variable", "no-key-source"],
)
def test_run_refuses_to_send_without_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
    reason: str,
    key: str,
) -> None:
    monkeypatch.delenv("AIONE_PROBE_TEST_UNSET_KEY", raising=False)
    with faultserver.running() as server:
        path = tmp_path / "c.toml"
        path.write_text(
            f'probes_dir = "{ROOT / "probes"}"\n'
            f'[[gateways]]\nname = "aione"\nbase_url = "{server.base_url}"\n'
            f'{source}models = ["ok"]\n'
            '[[suites]]\nfile = "smoke.toml"\ninterval = "1h"\n'
            f'[storage]\nurl = "sqlite:///{tmp_path / "p.db"}"\n'
            f'[reports]\ndir = "{tmp_path / "reports"}"\n'
        )
        assert main(["run", "--config", str(path)]) == 1
        assert server.seen == []  # nothing was sent
    err = capsys.readouterr().err
    assert reason in err and "gateway aione" in err, err
    with sqlite3.connect(tmp_path / "p.db") as db:
        failures = {r[0] for r in db.execute("select failure from observation")}
        messages = {r[0] for r in db.execute("select error_message from observation")}
    assert failures == {"auth"}
    assert all(f"not sent: {key}: " in m and reason in m for m in messages), messages
