"""Signed outputs: the checksum file and the SBOM signed with ``ssh-keygen -Y sign``, and their check.

Anyone with OpenSSH can check them (``ssh-keygen -Y verify`` and an
allowed-signers file naming the publisher's key); ``vaultdoit
verify-signature`` does the same and then checks that the image and the
files shipped with it match the signed checksums, and that the SBOM
describes this image. The key is the user's (``signing_key`` or
VAULTDOIT_SIGNING_KEY): vaultdoit never makes one.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vaultdoit import proc
from vaultdoit.checker import hash_file
from vaultdoit.errors import CommandFailed, VaultError, VerificationFailed
from vaultdoit.outputs import signature_path, signed_files
from vaultdoit.settings import SIGNING_KEY_ENV

NAMESPACE = "vaultdoit"  # ssh-keygen -n: a signature made for vaultdoit is valid for nothing else
ENV = SIGNING_KEY_ENV
KEY_HINT = ("name an SSH private key without a passphrase, or load the key into ssh-agent and name its .pub file "
            f"(signing_key in vault.toml or {ENV})")


def sign(file: Path, key: Path, *, logfile: Path | None = None) -> Path:
    """Sign ``file`` with ``key`` (``file.sig`` beside it) and return the signature's path."""
    signature = signature_path(file)
    signature.unlink(missing_ok=True)  # ssh-keygen will not replace one
    try:
        proc.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(file)], logfile=logfile)
    except CommandFailed as err:
        raise VaultError(f"cannot sign with this key ({err.tail.strip().splitlines()[-1] if err.tail.strip() else err})",
                         file=key, hint=KEY_HINT) from None
    return signature


def allowed_signers_line(public_key: str, principal: str = "vaultdoit-signing-key") -> str:
    """The allowed-signers line that trusts ``public_key`` for vaultdoit signatures only."""
    fields = public_key.split()
    if len(fields) < 2:
        raise VaultError("not an OpenSSH public key", hint="give the .pub file of the signing key")
    return f'{principal} namespaces="{NAMESPACE}" {fields[0]} {fields[1]}\n'


def public_key_of(key: Path) -> str:
    """The public key of the signing key: its .pub file beside it (or itself if it is one)."""
    pub = key if key.name.endswith(".pub") else key.with_name(key.name + ".pub")
    try:
        return pub.read_text().strip()
    except OSError:
        pass
    code, out = proc.check_output(["ssh-keygen", "-y", "-P", "", "-f", str(key)], timeout=30)
    if code != 0:
        raise VaultError("cannot read the public half of the signing key", file=key,
                         hint=f"put its public key beside it as {pub.name}, or pass --allowed-signers FILE")
    return out.strip()


@contextmanager
def trusting(key: Path) -> Iterator[Path]:
    """A temporary allowed-signers file that trusts ``key`` (the project's signing key)."""
    with tempfile.TemporaryDirectory(prefix="vaultdoit-signers-") as tmp:
        path = Path(tmp) / "allowed_signers"
        path.write_text(allowed_signers_line(public_key_of(key)))
        yield path


@dataclass(frozen=True)
class Verified:
    """What ``verify`` found good."""

    principal: str
    key: str  # "ED25519 key SHA256:..."
    files: tuple[str, ...]  # names of the files whose digests match

    def line(self, image: Path) -> str:
        verb = "matches" if len(self.files) == 1 else "match"
        return (f"{image.name}: good signature by {self.principal} ({self.key}); "
                f"{', '.join(self.files)} {verb} the signed checksums; the signed SBOM describes this image")


def _check(file: Path, allowed_signers: Path) -> tuple[str, str]:
    """Verify ``file``'s signature against ``allowed_signers``; return (principal, key)."""
    signature = signature_path(file)
    if not file.is_file():
        raise VerificationFailed("missing", file=file, hint="copy it from where the image was published")
    if not signature.is_file():
        raise VerificationFailed(f"not signed: {signature.name} is missing", file=file,
                                 hint="build with signing_key set, or get the signature from the publisher")
    code, out = proc.check_output(["ssh-keygen", "-Y", "find-principals", "-s", str(signature),
                                   "-f", str(allowed_signers)], timeout=30)
    principals = [p for p in out.splitlines() if p.strip() and code == 0]
    if not principals:
        raise VerificationFailed(f"{signature.name} is not a signature by a key in {allowed_signers}",
                                 file=file, hint="ask the publisher for their key, or check the allowed-signers file")
    principal = principals[0].strip()
    with tempfile.TemporaryDirectory(prefix="vaultdoit-verify-") as tmp:
        log = Path(tmp) / "verify.log"
        try:
            out = proc.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers), "-I", principal,
                            "-n", NAMESPACE, "-s", str(signature)], stdin=file.read_bytes(), capture=True,
                           logfile=log)
        except CommandFailed:
            raise VerificationFailed(f"does not match {signature.name}: changed since it was signed", file=file,
                                     hint="do not use this image; get it again from the publisher") from None
    found = re.search(r"with (\S+ key \S+)", out)
    return principal, found.group(1) if found else "key unknown"


def _checksums(file: Path) -> dict[str, str]:
    """name -> sha256 of a ``sha256sum`` style file."""
    found = {}
    for line in file.read_text(errors="replace").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            found[parts[1].lstrip("*")] = parts[0]
    return found


def verify(image: Path, allowed_signers: Path) -> Verified:
    """Check the signatures of ``image``'s checksum file and SBOM, then the image (and the files
    listed beside it) against the checksums and the SBOM against the image.

    Raises VerificationFailed naming the first file that does not hold.
    """
    if not allowed_signers.is_file():
        raise VaultError("allowed-signers file not found", file=allowed_signers,
                         hint='write one line: NAME namespaces="vaultdoit" <the publisher\'s public key>')
    checksum, sbom = signed_files(image)
    principal, key = _check(checksum, allowed_signers)
    _check(sbom, allowed_signers)
    digests = _checksums(checksum)
    if image.name not in digests:
        raise VerificationFailed(f"{checksum.name} does not list {image.name}", file=checksum,
                                 hint="this checksum file belongs to another image")
    for name, expected in digests.items():
        path = image.with_name(name)
        if "/" in name or name in (".", "..") or not path.is_file():  # only files beside the image
            raise VerificationFailed(f"{name}, listed in {checksum.name}, is missing", file=path,
                                     hint="copy every file published with the image")
        actual = hash_file(path)[0].split(":", 1)[1]
        if actual != expected:
            raise VerificationFailed(f"does not match {checksum.name}: changed since it was signed", file=path,
                                     hint="do not use this image; get it again from the publisher")
    try:
        from vaultdoit.sbom import image_digest

        described = image_digest(json.loads(sbom.read_text()))
    except (ValueError, AttributeError):
        described = None
    if described != digests[image.name]:
        raise VerificationFailed(f"describes another image than {image.name}", file=sbom,
                                 hint="use the SBOM published with this image")
    return Verified(principal, key, tuple(sorted(digests)))
