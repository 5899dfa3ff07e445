"""Operators and their passwords: a TOML file of scrypt hashes (never the passwords), read at start.

    # reid console operators; add one with `reid console --users FILE --add-user NAME`
    [operators]
    alice = "scrypt$16384$8$1$<salt, base64>$<hash, base64>"

scrypt is the standard library's (hashlib.scrypt): memory-hard, so a stolen file is slow to attack.
The running console reads the file again when it changes (`OperatorsFile`): a removed operator or a
new password takes effect, and ends that operator's sessions, at the next request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
from pathlib import Path

from retail_reid.compat import tomllib
from retail_reid.durable import replace_atomically
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.userfiles import read_user_file

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB of memory and ~50 ms a check
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD = 10
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
log = logging.getLogger("reid.console")
HEADER = "# reid console operators; add one with `reid console --users FILE --add-user NAME`\n[operators]\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    """An encoded scrypt hash with its own salt and cost parameters."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 2**20, dklen=HASH_BYTES
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str, where: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
        if not (2 <= n <= 2**17 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4 and salt and digest):
            raise ValueError
    except ValueError:
        raise ConsoleError(f"{where}: not a password hash made by `reid console --add-user`") from None
    return n, r, p, salt, digest


class Operators:
    """The signed-in identities the console knows, and the check of a password."""

    def __init__(self, hashes: dict[str, str], path: Path):
        self.path = path
        self.encoded = dict(hashes)
        self._hashes = {name: _parse_hash(h, f"{path}: operators.{name}") for name, h in hashes.items()}
        self._dummy = _parse_hash(hash_password(secrets.token_hex(8)), "dummy")

    @classmethod
    def load(cls, path: Path) -> Operators:
        """Read and check the whole file: a typo is an error at start, naming the file and key."""
        data = read_user_file(path, "operators file", ConsoleError)
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConsoleError(f"{path}: not a valid TOML file ({e})") from None
        table = doc.get("operators")
        if not isinstance(table, dict) or not table:
            raise ConsoleError(f"{path}: no [operators] table with at least one operator (see --add-user)")
        unknown = sorted(set(doc) - {"operators"})
        if unknown:
            raise ConsoleError(f"{path}: unknown table or key {unknown[0]!r} (only [operators] is read)")
        for name, value in table.items():
            if not NAME.fullmatch(name) or not isinstance(value, str):
                raise ConsoleError(f'{path}: operators.{name}: expected NAME = "scrypt$..." (letters, digits, . _ -)')
        return cls(table, path)

    @property
    def names(self) -> list[str]:
        return sorted(self._hashes)

    def check(self, name: str, password: str) -> bool:
        """True when the password is this operator's; as slow for an unknown name as for a known one."""
        n, r, p, salt, digest = self._hashes.get(name, self._dummy)
        got = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * n * r * p + 2**20, dklen=len(digest)
        )
        return hmac.compare_digest(got, digest) and name in self._hashes

    def credential(self, name: str) -> str | None:
        """A fingerprint of the operator's current password hash (None: no such operator); a
        session remembers it, and ends when it changes."""
        encoded = self.encoded.get(name)
        return None if encoded is None else hashlib.sha256(encoded.encode()).hexdigest()


class OperatorsFile:
    """The operators file as it is now: read again whenever it changes on disk. A file that has
    become unreadable or invalid signs nobody in (and ends every session) until it is fixed."""

    def __init__(self, path: Path):
        self.path = path
        self._operators = Operators.load(path)  # a bad file at start is an error, naming it
        self._seen = self._stamp()
        self._lock = threading.Lock()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def current(self) -> Operators:
        stamp = self._stamp()
        with self._lock:
            if stamp != self._seen:
                self._seen = stamp
                try:
                    self._operators = Operators.load(self.path)
                except ConsoleError as e:
                    log.error("%s; nobody can sign in until it is fixed", e)
                    self._operators = Operators({}, self.path)
            return self._operators


def _write(path: Path, hashes: dict[str, str]) -> None:
    text = HEADER + "".join(f'{n} = "{h}"\n' for n, h in sorted(hashes.items()))
    replace_atomically(path, text.encode(), "users")
    path.chmod(0o600)  # hashes only, but nobody else needs to read them


def add_operator(path: Path, name: str, password: str) -> None:
    """Add or replace one operator's hash, rewriting the file atomically (the others are kept)."""
    if not NAME.fullmatch(name):
        raise ConsoleError(f"--add-user {name!r}: a name is 1-64 letters, digits, '.', '_' or '-'")
    if len(password) < MIN_PASSWORD:
        raise ConsoleError(f"the password must have at least {MIN_PASSWORD} characters")
    hashes = dict(Operators.load(path).encoded) if path.exists() else {}
    hashes[name] = hash_password(password)
    _write(path, hashes)


def remove_operator(path: Path, name: str) -> None:
    """Remove one operator (their sessions end at their next request); at least one must remain."""
    hashes = dict(Operators.load(path).encoded)
    if name not in hashes:
        raise ConsoleError(f"--remove-user {name!r}: no such operator in {path} ({', '.join(sorted(hashes))})")
    if len(hashes) == 1:
        raise ConsoleError(f"--remove-user {name!r}: the last operator of {path}; add another first")
    del hashes[name]
    _write(path, hashes)
