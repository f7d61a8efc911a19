"""No credential in the repository: private keys, token formats, secret literals, key files.

Scans every tracked file (``git ls-files``). Test code may hold made-up values only when they say
so (``test``, ``dummy``, ``fake``, ``example``, ``canary``, ``placeholder`` in the value), or when
listed in :data:`ALLOWED` with the reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
TOKEN_FORMATS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Grafana service account token": re.compile(r"\bglsa_[A-Za-z0-9]{32}_[0-9a-f]{8}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[0-9A-Za-z-]{10,}"),
}
#: A name that says it holds a secret; not one inside ``${...}``, which only refers to a variable.
_SECRET_NAME = r"(?<![\w${.-])[\w.-]*(?:password|passwd|secret|token|api_?key|private_?key)[\w.-]*"
#: ``name = "literal"`` or ``name: 'literal'`` in any file.
QUOTED_ASSIGNMENT = re.compile(rf"""(?i){_SECRET_NAME}["']?\s*[:=]\s*["']([^"'\s]{{4,}})["']""")
#: ``name: literal`` or ``NAME=literal`` in configuration files, where values go unquoted.
BARE_ASSIGNMENT = re.compile(rf"""(?i){_SECRET_NAME}\s*[:=][ \t]*([^\s"'#,;]{{4,}})""")
CONFIG_SUFFIXES = {".yml", ".yaml", ".env", ".ini", ".cfg", ".toml", ".conf", ".properties"}
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"{}]+:([^/\s@'\"{}]+)@")
SECRET_FILE = re.compile(
    r"(?:^|/)(?:\.env(?:\..+)?|id_(?:rsa|dsa|ecdsa|ed25519)(?:\..+)?|\.netrc|\.pypirc|"
    r"[^/]+\.(?:pem|key|p12|pfx|jks|keystore))$"
)
FAKE_MARKERS = ("test", "dummy", "fake", "example", "canary", "placeholder")
#: (path, value) pairs that look like secrets but are not, with why.
ALLOWED = {
    ("tests/integration/test_dashboards_push.py", "s3cret"): (
        "a made-up password in GRAFANA_URL, to check that push never echoes it"
    ),
    ("tests/unit/test_config.py", "s3cret-pw"): (
        "a made-up SASL password, to check the settings pass it through and never show it"
    ),
}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str
    value: str


def _placeholder(value: str) -> bool:
    return value.startswith(("$", "{", "<", "%", "os.", "settings.")) or set(value) <= {".", "*"}


def scan_text(path: str, text: str) -> list[Finding]:
    """What in ``text`` (the content of ``path``) looks like a credential."""
    found: list[Finding] = []
    config = Path(path).suffix in CONFIG_SUFFIXES or Path(path).name.startswith(".env")
    for number, line in enumerate(text.splitlines(), start=1):
        if PRIVATE_KEY.search(line):
            found.append(Finding(path, number, "private key", "-----BEGIN ..."))
        for what, pattern in TOKEN_FORMATS.items():
            found.extend(Finding(path, number, what, m.group(0)) for m in pattern.finditer(line))
        candidates = [("secret literal", m.group(1)) for m in QUOTED_ASSIGNMENT.finditer(line)]
        if config:
            candidates += [("secret value", m.group(1)) for m in BARE_ASSIGNMENT.finditer(line)]
        candidates += [("password in a URL", m.group(1)) for m in URL_CREDENTIALS.finditer(line)]
        for what, value in candidates:
            if _placeholder(value) or any(marker in value.lower() for marker in FAKE_MARKERS):
                continue
            if (path, value) in ALLOWED:
                continue
            found.append(Finding(path, number, what, value))
    return found


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    )
    return [name for name in result.stdout.decode().split("\0") if name]


def test_the_scanner_finds_what_it_looks_for() -> None:
    header = "-----BEGIN " + "RSA PRIVATE KEY-----"
    word = "pass" + "word"
    samples = {
        header: "private key",
        "AKIA" + "Q3EGXXXXEXAMPL3Z": "AWS access key id",
        "glsa_" + "a" * 32 + "_0123abcd": "Grafana service account token",
        f'db_{word} = "hunter2hunter2"': "secret literal",
        f"{{'sasl_plain_{word}': 'Tr0ub4dor&3'}}": "secret literal",
        f"kafka://alice:{word}42@broker:9092": "password in a URL",
    }
    for text, what in samples.items():
        assert [f.what for f in scan_text("src/app.py", text)] == [what], text
    assert [f.value for f in scan_text("deploy/x.yml", f"  {word}: hunter2hunter2")] == [
        "hunter2hunter2"
    ]


def test_the_scanner_lets_references_and_labelled_fakes_pass() -> None:
    word = "pass" + "word"
    harmless = [
        f"{word} = settings.kafka_sasl_{word}",
        f'GF_SECURITY_ADMIN_{word.upper()}: "${{GRAFANA_ADMIN_{word.upper()}:?set it}}"',
        f"export GRAFANA_ADMIN_{word.upper()}='...'",
        f'DUMMY_{word.upper()} = "test-only-not-a-secret"',
        'token = os.environ.get("GRAFANA_TOKEN", "")',
        "http://127.0.0.1:{port}/metrics",
    ]
    for text in harmless:
        assert scan_text("deploy/compose.yaml", text) == [], text


def test_no_tracked_file_holds_a_credential() -> None:
    findings: list[Finding] = []
    names = tracked_files()
    assert "pyproject.toml" in names
    for name in names:
        if SECRET_FILE.search(name):
            findings.append(Finding(name, 0, "key or credentials file", name))
            continue
        try:
            data = (REPO / name).read_bytes()
        except FileNotFoundError:  # deleted in the working tree, not yet in the index
            continue
        if b"\0" in data[:8192]:
            continue
        findings.extend(scan_text(name, data.decode("utf-8", errors="replace")))
    assert findings == []
