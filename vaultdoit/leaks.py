"""What counts as a leak of the build, checked on a file tree copied out of an image.

Pure file reading, no programs: ``scan.py`` unpacks the image, this module
says what in it is the build's. A file's path decides some checks (journal
files, login records, histories, Ansible's folders, authorized_keys, shadow
files) and its bytes others (the build key, its fingerprint, the APT proxy's
address, private keys). Findings carry the path inside the image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from vaultdoit.apt_proxy import GUEST_HOST
from vaultdoit.config import ProjectConfig
from vaultdoit.errors import ScanError
from vaultdoit.project import pubkey

CHUNK = 8 * 2**20  # files are read in pieces: model weights can be many GiB
UTMP_RECORD = 384  # struct utmp on Linux (wtmp, btmp)
LASTLOG_RECORD = 292  # struct lastlog on Linux
LOGIN_RECORDS = {"/var/log/wtmp": UTMP_RECORD, "/var/log/wtmp.1": UTMP_RECORD, "/var/log/btmp": UTMP_RECORD,
                 "/var/log/btmp.1": UTMP_RECORD, "/var/log/lastlog": LASTLOG_RECORD}
LOGIN_DATABASES = {"/var/lib/wtmpdb/wtmp.db": "wtmp", "/var/lib/lastlog/lastlog2.db": "Lastlog2"}
HISTORIES = {".bash_history", ".zsh_history", ".sh_history", ".ash_history", ".history", "fish_history",
             ".python_history", ".mysql_history", ".psql_history", ".sqlite_history", ".lesshst",
             ".node_repl_history", ".rediscli_history"}
SHADOW_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-")
APT_CONF = ("/etc/apt/apt.conf", "/etc/apt/apt.conf.d/")
HOST_KEY = re.compile(r"^/etc/ssh/ssh_host_[a-z0-9]+_key$")  # made anew on first boot where missing
PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----\r?\n(?:Proc-Type:|[A-Za-z0-9+/=]{16})")
PRIVATE_MARK = b"PRIVATE KEY-----"
APT_PROXY = re.compile(r"acquire\s*(::|\{)\s*\w+\s*(::|\{)\s*proxy", re.IGNORECASE)
KEY_TYPES = re.compile(r"(?:^|\s)((?:ssh|ecdsa|sk)-[\w@.-]+)\s+([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$")


@dataclass(frozen=True)
class PublicKey:
    """An OpenSSH public key and the forms in which it can appear in logs and files."""

    type: str
    blob: str  # base64, as in authorized_keys
    comment: str = ""

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def md5(self) -> str:
        digest = hashlib.md5(base64.b64decode(self.blob)).hexdigest()  # noqa: S324 - a fingerprint format
        return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))

    @property
    def short(self) -> str:
        return f"{self.type} {self.blob[:12]}…{' ' + self.comment if self.comment else ''}"


def parse_key_line(line: str) -> PublicKey | None:
    """The key of an ``authorized_keys`` or ``.pub`` line (options before it allowed), or None."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    match = KEY_TYPES.search(line)
    if match is None:
        return None
    try:
        base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        return None
    return PublicKey(match.group(1), match.group(2), (match.group(3) or "").strip())


def read_public_key(path: Path) -> PublicKey:
    """The key of a ``.pub`` file."""
    try:
        key = parse_key_line(path.read_text(errors="replace"))
    except OSError as exc:
        raise ScanError(f"cannot read the key: {exc.strerror}", file=path, hint="give an OpenSSH .pub file") from None
    if key is None:
        raise ScanError("not an OpenSSH public key", file=path, hint="give an OpenSSH .pub file")
    return key


@dataclass(frozen=True)
class Secrets:
    """What the build used and the image must not carry, and the one key it may carry."""

    build_keys: tuple[PublicKey, ...] = ()
    access_keys: tuple[PublicKey, ...] = ()
    proxies: tuple[str, ...] = ()  # host:port as guests and the host saw them

    def needles(self) -> list[tuple[bytes, str]]:
        """(bytes to look for in every file, what finding them means)."""
        found: list[tuple[bytes, str]] = []
        for key in self.build_keys:
            found += [(key.blob.encode(), "the build key (public key text)"),
                      (key.sha256.encode(), f"the build key's fingerprint ({key.sha256})"),
                      (key.md5.encode(), f"the build key's fingerprint (MD5 {key.md5})")]
        found += [(p.encode(), f"the build's proxy address ({p})") for p in self.proxies]
        return found

    def plus(self, *, build: Iterable[PublicKey] = (), access: Iterable[PublicKey] = (),
             proxies: Iterable[str] = ()) -> Secrets:
        """These secrets and more."""
        return Secrets(tuple(dict.fromkeys([*self.build_keys, *build])),
                       tuple(dict.fromkeys([*self.access_keys, *access])),
                       tuple(dict.fromkeys([*self.proxies, *proxies])))


def project_secrets(cfg: ProjectConfig) -> tuple[Secrets, list[str]]:
    """A project's build key, access key and APT proxy addresses; notes on what is missing."""
    keys: dict[str, list[PublicKey]] = {"build": [], "access": []}
    notes = []
    for name, key in (("build", cfg.build_key), ("access", cfg.access_key)):
        if pubkey(key).is_file():
            keys[name].append(read_public_key(pubkey(key)))
        else:
            notes.append(f"{pubkey(key)} does not exist: not looked for")
    proxies = proxy_addresses(cfg.apt_proxy, cfg.apt_proxy_port, GUEST_HOST)
    return Secrets(tuple(keys["build"]), tuple(keys["access"]), proxies), notes


def proxy_addresses(setting: str, port: int, guest_host: str) -> tuple[str, ...]:
    """host:port forms of the build's APT proxy: the managed one as guests and the host
    reach it, and an external one's own address."""
    found = [f"{guest_host}:{port}", f"127.0.0.1:{port}"]
    if setting.startswith(("http://", "https://")):
        parts = urlsplit(setting)
        if parts.hostname:
            found.append(f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}")
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, order=True)
class Finding:
    """One leak: where in the image, and what."""

    volume: str  # "" for an unpartitioned file system, else "partition N"
    path: str  # absolute path inside the volume
    what: str

    def __str__(self) -> str:
        return f"{self.volume + ':' if self.volume else ''}{self.path}: {self.what}"


def _chunks(path: Path, overlap: int) -> Iterator[bytes]:
    """The file's bytes in pieces that overlap by ``overlap`` bytes (needles may straddle)."""
    with path.open("rb") as fh:
        tail = b""
        while True:
            piece = fh.read(CHUNK)
            if not piece:
                return
            yield tail + piece
            tail = piece[-overlap:] if overlap else b""


def _content(path: Path, needles: list[tuple[bytes, str]], private_keys: bool) -> tuple[list[str], list[str]]:
    """What of ``needles`` the file contains, and the kinds of private key blocks in it."""
    overlap = max([len(n) for n, _ in needles] + [256])
    found: dict[str, None] = {}
    keys: dict[str, None] = {}
    for chunk in _chunks(path, overlap):
        for needle, what in needles:
            if what not in found and needle in chunk:
                found[what] = None
        if private_keys and PRIVATE_MARK in chunk:
            for match in PRIVATE_KEY.finditer(chunk):
                keys[match.group(1).decode().strip()] = None
    return list(found), list(keys)


class Packaged:
    """Files a package manager installed, with the hashes it recorded (dpkg's md5sums, the
    RECORD of installed wheels): an unmodified one is the package's, not the build's."""

    MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # /usr-merged systems list /lib/...

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self._hashes: dict[str, tuple[str, str]] | None = None

    def _load(self) -> dict[str, tuple[str, str]]:
        hashes: dict[str, tuple[str, str]] = {}
        for sums in (self.tree / "var/lib/dpkg/info").glob("*.md5sums"):
            for line in sums.read_text(errors="replace").splitlines():
                digest, _, name = line.partition("  ")
                if name:
                    hashes["/" + name.strip()] = ("md5", digest.strip())
        for record in self.tree.glob("**/*.dist-info/RECORD"):
            site = "/" + os.path.relpath(record.parent.parent, self.tree)
            for line in record.read_text(errors="replace").splitlines():
                name, _, rest = line.partition(",")
                algo, _, digest = rest.split(",")[0].partition("=")
                if name and digest:
                    # RECORD hashes are urlsafe base64 without padding; compare as hex.
                    raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
                    hashes[os.path.normpath(os.path.join(site, name))] = (algo, raw.hex())
        return hashes

    def unmodified(self, image_path: str, path: Path) -> bool:
        if self._hashes is None:
            self._hashes = self._load()
        parts = image_path.split("/")
        names = [image_path]
        if parts[1:2] == ["usr"] and parts[2:3] and parts[2] in self.MERGED:
            names.append("/" + "/".join(parts[2:]))
        for name in names:
            if name in self._hashes:
                algo, expected = self._hashes[name]
                try:
                    with path.open("rb") as fh:
                        return hashlib.file_digest(fh, algo).hexdigest() == expected
                except ValueError:  # a hash algorithm this Python lacks
                    return False
        return False


def _login_records(path: Path, size: int) -> int:
    """How many records of ``size`` bytes are not all zeros (lastlog is sparse by uid)."""
    count = 0
    with path.open("rb") as fh:
        # Whole records per read: none straddles two pieces.
        for piece in iter(lambda: fh.read(size * 16384), b""):
            count += sum(1 for start in range(0, len(piece), size) if piece[start:start + size].strip(b"\0"))
    return count


def _db_rows(path: Path, table: str) -> int | None:
    """Rows in ``table`` of an SQLite login database (wtmpdb, lastlog2); None if unreadable."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as db:
            return int(db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
    except sqlite3.Error:
        return None


def _shadow(path: Path, image_path: str) -> list[str]:
    """Password hashes (or empty passwords) in a shadow or gshadow file."""
    found = []
    group = "gshadow" in image_path
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) < 2 or not fields[0] or line.startswith("#"):
            continue
        name, secret = fields[0], fields[1]
        if secret == "":
            if not group:  # an empty gshadow field means "no group password"
                found.append(f"empty password for {name} (login without a password)")
        elif secret.strip("!*"):
            found.append(f"password hash for {'group ' if group else ''}{name}")
    return found


def _authorized(path: Path, secrets: Secrets) -> tuple[list[str], int]:
    """Keys other than the access key (build keys are reported by their text); and how many
    keys there were when no access key is known."""
    found, unjudged = [], 0
    build = {k.blob for k in secrets.build_keys}
    allowed = {k.blob for k in secrets.access_keys}
    for line in path.read_text(errors="replace").splitlines():
        key = parse_key_line(line)
        if key is None:
            if line.strip() and not line.strip().startswith("#"):
                found.append("an authorized_keys line that is not a key")
            continue
        if key.blob in build:
            continue
        if not allowed:
            unjudged += 1
        elif key.blob not in allowed:
            found.append(f"an authorized key other than the access key ({key.short})")
    return found, unjudged


def _apt_proxy_setting(path: Path) -> bool:
    """An Acquire::<protocol>::Proxy setting outside comments."""
    text = re.sub(r"//[^\n]*|#[^\n]*|/\*.*?\*/", "", path.read_text(errors="replace"), flags=re.S)
    return APT_PROXY.search(text) is not None


def _leftover(image_path: str) -> bool:
    """Ansible's folders: ~/.ansible of any user, its temporary files in /tmp and /var/tmp."""
    parts = image_path.strip("/").split("/")
    if parts[-1] == ".ansible" and (parts[:-1] == ["root"] or (len(parts) == 3 and parts[0] == "home")):
        return True
    return (len(parts) == 2 and parts[0] == "tmp" or parts[:2] == ["var", "tmp"] and len(parts) == 3) \
        and parts[-1].lower().lstrip(".").startswith("ansible")


@dataclass
class TreeResult:
    """The checks' outcome on one file system."""

    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    unjudged_keys: int = 0  # authorized keys, when no access key was given
    package_keys: list[str] = field(default_factory=list)  # unmodified package files with key blocks


def check_tree(tree: Path, secrets: Secrets, volume: str = "") -> TreeResult:
    """Every check on a file system copied to ``tree`` (paths in findings are the image's)."""
    result = TreeResult()
    needles = secrets.needles()
    packages = Packaged(tree)

    def add(path: str, what: str) -> None:
        result.findings.append(Finding(volume, path, what))

    for folder, dirs, names in os.walk(tree):
        rel_folder = "/" + os.path.relpath(folder, tree) if folder != str(tree) else ""
        for name in dirs:
            if _leftover(f"{rel_folder}/{name}"):
                add(f"{rel_folder}/{name}", "Ansible leftover")
        for name in names:
            path = Path(folder) / name
            image_path = f"{rel_folder}/{name}"
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            result.files += 1
            size = path.stat().st_size
            found, keys = _content(path, needles, not HOST_KEY.match(image_path))
            for what in found:
                add(image_path, what)
            if keys and packages.unmodified(image_path, path):
                # Test vectors shipped by a package (gnutls' self-tests, a library's test data).
                result.package_keys.append(image_path)
            else:
                for kind in keys:
                    add(image_path, f"a private key ({kind + ' ' if kind else ''}PRIVATE KEY block)")
            if _leftover(image_path):
                add(image_path, "Ansible leftover")
            if image_path.startswith("/var/log/journal/") and name.endswith((".journal", ".journal~")):
                add(image_path, f"a systemd journal file of a build boot ({size / 2**20:.1f} MiB)")
            elif image_path in LOGIN_RECORDS and size:
                records = _login_records(path, LOGIN_RECORDS[image_path])
                if records:
                    add(image_path, f"{records} login record{'s' if records != 1 else ''}")
            elif image_path in LOGIN_DATABASES and size:
                rows = _db_rows(path, LOGIN_DATABASES[image_path])
                if rows is None or rows:
                    add(image_path, "login records" if rows is None else f"{rows} login records")
            elif name in HISTORIES and size:
                add(image_path, f"a shell history ({size} bytes)")
            elif name in ("authorized_keys", "authorized_keys2"):
                lines, count = _authorized(path, secrets)
                result.unjudged_keys += count
                for what in lines:
                    add(image_path, what)
            elif image_path in SHADOW_FILES:
                for what in _shadow(path, image_path):
                    add(image_path, what)
            elif (image_path == APT_CONF[0] or image_path.startswith(APT_CONF[1])) and _apt_proxy_setting(path):
                add(image_path, "an APT proxy setting (Acquire::…::Proxy)")
    return result
