"""The shared stage cache: stages kept in an OCI registry and found by key, through oras.

One stage is one artifact in the repository named by ``remote_cache``. Its
tag is the stage's key for a first stage, and ``<key>-on-<parent>`` (the
first 16 hex digits of the parent image's sha256) for a stage on a parent: an
overlay is only valid on the exact bytes it was built on, and two builds of
one key are not bit-for-bit equal, so a machine whose parent was built
elsewhere never takes a child made for another parent.

The artifact holds the stage's image as it is on disk (for a stage on a
parent, only its overlay: the backing reference is relative and names the
parent's image, so it resolves to the puller's own parent), cut into layers
of at most ``remote_chunk_size`` (registries refuse multi-GB blobs), then the
stage's other outputs (kernel, initrd) and its reports. The config blob is
the stage's build record; annotations carry the key, the parent's key, the
tool versions and the record, so ``oras manifest fetch``, skopeo and registry
UIs show what each artifact is.

Uploads stream each layer from the file in pieces (oras' own push reads a
whole file into memory) and skip layers the registry already has. Downloads
are checked against their digests (oras' pull does not) before anything is
put in place. The registry is never needed: a failure is one warning line
and a local build, and a registry that failed is not asked again in the
same run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import ipaddress
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultdoit import checker, keys, owned, stage_files
from vaultdoit.config import ProjectConfig
from vaultdoit.errors import RemoteDataError, RemoteError, VaultError
from vaultdoit.buildspec import RemoteCache, StageBuild
from vaultdoit.progress import note

ARTIFACT_TYPE = "application/vnd.vaultdoit.stage.v1"
RECORD_TYPE = "application/vnd.vaultdoit.stage.record.v1+json"  # the config blob: the build record
PART_TYPE = "application/vnd.vaultdoit.stage.image.part.v1"  # a piece of the stage's qcow2 image
FILE_TYPE = "application/vnd.vaultdoit.stage.file.v1"  # another output, or a report
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
NOTE = "io.vaultdoit.stage."  # prefix of our annotations
REPORTS = "reports/"  # title prefix of a report file
USER_ENV, PASSWORD_ENV = "VAULTDOIT_REGISTRY_USER", "VAULTDOIT_REGISTRY_PASSWORD"
PUSH_VAR = "remote_push"  # doit final_image remote_push=0
TIMEOUT = (10.0, 300.0)  # seconds to connect, and to wait for the next bytes
RECORD_LIMIT = 16 * 2**20  # a build record is a few KiB; refuse to read a huge one into memory


def spec(cfg: ProjectConfig) -> RemoteCache | None:
    """The shared cache a build uses: ``remote_cache`` with ``remote_push`` as overridden on
    doit's command line (``remote_push=0``) over the environment and vault.toml."""
    if not cfg.remote_cache:
        return None
    push = cfg.remote_push
    from doit import get_var

    value = get_var(PUSH_VAR)
    if value is not None:
        push = str(value).strip().lower() not in ("0", "false", "no", "off")
    return RemoteCache(cfg.remote_cache, push=push, chunk_size=cfg.remote_chunk_size)


def tag_for(key: str, parent_image: str | None) -> str:
    """The tag of a stage built for ``key`` on the parent image with sha256 ``parent_image``."""
    if parent_image is None:
        return key
    return f"{key}-on-{parent_image.split(':')[-1][:16]}"


def parent_image(build: StageBuild) -> str | None:
    """sha256 of the parent's image as its build record says (None for a first stage)."""
    if build.parent is None:
        return None
    digest = stage_files.image_digest(build.parent.output)
    if digest is None:
        raise RemoteError(f"the parent stage {build.parent.id} has no build record",
                          hint=f"build stage:{build.parent.id} first")
    return digest


# --------------------------------------------------------------------------- the registry


def _loopback(host: str) -> bool:
    """``localhost`` or a loopback address (with or without a port): plain HTTP, as docker allows."""
    name = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _auth_files() -> list[str]:
    """Where docker, podman/skopeo and oras keep registry credentials (those that exist)."""
    found = []
    docker = os.environ.get("DOCKER_CONFIG")
    found.append(os.path.join(docker, "config.json") if docker else os.path.expanduser("~/.docker/config.json"))
    if os.environ.get("REGISTRY_AUTH_FILE"):
        found.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        found.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    return [f for f in dict.fromkeys(found) if os.path.isfile(f)]


@functools.cache
def _oras_classes() -> tuple[Any, Any]:
    """oras' registry client without its retries, and a requests adapter with timeouts
    (imported on first use: a build without a remote cache never loads them)."""
    # jsonschema (which oras imports) loads every optional format checker it finds installed;
    # rfc3987_syntax (pulled in by test tools) compiles a grammar for 2-3 s when imported.
    # oras checks no formats: leave it out of this process.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import oras.provider
    from requests.adapters import HTTPAdapter

    unretried = oras.provider.Registry.do_request.__wrapped__

    class Client(oras.provider.Registry):
        # oras retries every failed request five times, sleeping up to 83 s: an unreachable
        # registry would hold a build for minutes. One try; the caller builds locally.
        def do_request(self, url: str, method: str = "GET", data: Any = None, headers: dict[str, str] | None = None,
                       json: Any = None, stream: bool = False) -> Any:
            return unretried(self, url, method, data, headers, json, stream)

    class Timeouts(HTTPAdapter):
        def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True,
                 cert: Any = None, proxies: Any = None) -> Any:
            return super().send(request, stream=stream, timeout=TIMEOUT if timeout is None else timeout,
                                verify=verify, cert=cert, proxies=proxies)

    return Client, Timeouts


class Registry:
    """One repository of an OCI registry (``<host>[:port]/<path>``), spoken to through oras."""

    def __init__(self, repository: str) -> None:
        self.repository = repository
        self.host, _, self.path = repository.partition("/")
        self.scheme = "http" if _loopback(self.host) else "https"
        self._client: Any = None
        self._basic: str | None = None  # base64 user:password for a registry that takes Basic auth

    def url(self, kind: str, ref: str = "") -> str:
        return f"{self.scheme}://{self.host}/v2/{self.path}/{kind}/{ref}"

    def _connect(self) -> Any:
        """Ask the registry how it authenticates, then set up oras' client with the credentials
        of docker/podman/oras configuration files, or of the environment."""
        import requests

        client_cls, adapter_cls = _oras_classes()
        session = requests.Session()
        for prefix in ("http://", "https://"):
            session.mount(prefix, adapter_cls())
        if self.scheme == "http":
            session.trust_env = False  # a loopback registry is never behind the environment's proxy
        try:
            probe = session.get(f"{self.scheme}://{self.host}/v2/")
        except requests.RequestException as exc:
            raise RemoteError(f"cannot reach {self.host}: {_why(exc)}") from None
        challenge = probe.headers.get("Www-Authenticate", "")
        basic = probe.status_code == 401 and challenge.lower().startswith("basic")
        if probe.status_code not in (200, 401):
            raise RemoteError(f"{self.host} is not an OCI registry (GET /v2/ answered {probe.status_code})")
        client = client_cls(hostname=self.host, insecure=self.scheme == "http",
                            auth_backend="basic" if basic else "token")
        client.session = session
        client.auth.session = session
        client.auth._basic_auth = None
        files = _auth_files()
        if files:
            import oras.container

            client.auth.load_configs(oras.container.Container(f"{self.repository}:latest"), configs=files)
        user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
        if user and password:
            client.auth.set_basic_auth(user, password)
        self._basic = client.auth._basic_auth if basic else None
        if basic and not self._basic:
            raise RemoteError(f"{self.host} asks for a user name and password and none is configured",
                              hint=f"`docker login {self.host}` (or oras login), or set {USER_ENV} and {PASSWORD_ENV}")
        return client

    def request(self, method: str, url: str, *, ok: Iterable[int], what: str, data: Any = None,
                headers: dict[str, str] | None = None, stream: bool = False) -> Any:
        """One request through oras (which answers token challenges); RemoteError unless the
        status is in ``ok``."""
        import requests

        if self._client is None:
            self._client = self._connect()
        headers = dict(headers or {})
        if self._basic:
            headers["Authorization"] = f"Basic {self._basic}"  # up front: no body is sent twice
        try:
            response = self._client.do_request(url, method, data=data, headers=headers, stream=stream)
        except requests.RequestException as exc:
            raise RemoteError(f"{what}: {_why(exc)}") from None
        except ValueError as exc:  # oras: a challenge it cannot answer
            raise RemoteError(f"{what}: {exc}") from None
        if response.status_code not in ok:
            detail = _error_text(response)
            hint = None
            if response.status_code in (401, 403):
                hint = f"log in to {self.host} (docker login / oras login) or set {USER_ENV} and {PASSWORD_ENV}"
            raise RemoteError(f"{what}: {self.host} answered {response.status_code}{detail}", hint=hint)
        return response

    def manifest(self, tag: str) -> tuple[dict[str, Any], str] | None:
        """The manifest tagged ``tag`` and its digest, or None when there is none."""
        response = self.request("GET", self.url("manifests", tag), ok=(200, 404), what=f"looking up {tag[:16]}…",
                                headers={"Accept": MANIFEST_TYPE})
        if response.status_code == 404:
            return None
        body = response.content
        try:
            data = json.loads(body)
        except ValueError:
            raise RemoteDataError(f"the manifest of {tag[:16]}… is not JSON") from None
        if not isinstance(data, dict):
            raise RemoteDataError(f"the manifest of {tag[:16]}… is not an object")
        return data, "sha256:" + hashlib.sha256(body).hexdigest()

    def has_blob(self, digest: str) -> bool:
        response = self.request("HEAD", self.url("blobs", digest), ok=(200, 404), what="checking a layer")
        return bool(response.status_code == 200)

    def upload(self, digest: str, size: int, body: Any) -> None:
        """Upload one blob: open an upload session, then one PUT whose body is streamed."""
        from urllib.parse import urljoin

        import oras.utils

        opened = self.request("POST", self.url("blobs", "uploads/"), ok=(202,), what="starting an upload",
                              headers={"Content-Length": "0"})
        location = opened.headers.get("Location")
        if not location:
            raise RemoteError(f"{self.host} opened an upload without a Location")
        target = oras.utils.append_url_params(urljoin(opened.url, location), {"digest": digest})
        self.request("PUT", target, ok=(201, 204), what=f"uploading {digest[:19]}…", data=body,
                     headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})

    def download(self, digest: str, size: int, write: Callable[[bytes], object]) -> int:
        """Stream blob ``digest`` to ``write``; RemoteDataError unless it has ``size`` bytes and that digest."""
        import requests

        response = self.request("GET", self.url("blobs", digest), ok=(200,), what=f"downloading {digest[:19]}…",
                                stream=True)
        got, check = 0, hashlib.sha256()
        try:
            for piece in response.iter_content(stage_files.PIECE):
                got += len(piece)
                if got > size:
                    raise RemoteDataError(f"layer {digest[:19]}… is longer than its {size} bytes")
                check.update(piece)
                write(piece)
        except requests.RequestException as exc:
            # The registry answered, then the data stopped: what came is unusable, the registry may not be.
            raise RemoteDataError(f"layer {digest[:19]}… is truncated ({got} of {size} bytes: {_why(exc)})") from None
        finally:
            response.close()
        if got != size:
            raise RemoteDataError(f"layer {digest[:19]}… is truncated ({got} of {size} bytes)")
        if "sha256:" + check.hexdigest() != digest:
            raise RemoteDataError(f"layer {digest[:19]}… does not match its digest")
        return got

    def put_manifest(self, tag: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        self.request("PUT", self.url("manifests", tag), ok=(201, 200), what=f"tagging {tag[:16]}…", data=body,
                     headers={"Content-Type": MANIFEST_TYPE})
        return "sha256:" + hashlib.sha256(body).hexdigest()


def _why(exc: BaseException) -> str:
    """A network error in a few words (requests' own texts run to several lines of nested reprs)."""
    text = str(exc)
    for phrase in ("Connection refused", "timed out", "Name or service not known", "No route to host",
                   "Connection reset", "Connection aborted", "certificate verify failed", "Remote end closed"):
        if phrase in text:
            return phrase.lower()
    return type(exc).__name__ + (f": {text[:160]}" if text else "")


def _error_text(response: Any) -> str:
    try:
        errors = response.json().get("errors") or []
        return f" ({errors[0].get('code')}: {errors[0].get('message')})" if errors else ""
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


class _Range:
    """A byte range of a file as an upload body: sent in pieces, never read whole, and
    iterable again (a request repeated after an authentication challenge sends it again)."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self.path, self.offset, self.size = path, offset, size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        return stage_files.read_range(self.path, self.offset, self.size)


# --------------------------------------------------------------------------- push and pull


@dataclass
class Transfer:
    """What one push or pull moved."""

    reference: str  # <repository>:<tag>
    layers: int
    moved: int  # bytes sent or received
    skipped: int = 0  # layers the registry already had (push)
    seconds: float = 0.0

    def summary(self, verb: str) -> str:
        mib = self.moved / 2**20
        rate = f", {mib / self.seconds:.0f} MiB/s" if self.seconds > 0.05 and mib >= 1 else ""
        kept = f", {self.skipped} of {self.layers} layers already there" if self.skipped else ""
        return f"{verb} {self.reference} ({mib:.1f} MiB in {self.seconds:.1f} s{rate}{kept})"


def _layer(media_type: str, digest: str, size: int, title: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, "annotations": {TITLE: title}}


def push_stage(registry: Registry, remote: RemoteCache, build: StageBuild, record: dict[str, Any]) -> Transfer:
    """Store the built stage of ``build`` (whose build record is ``record``) under its tag."""
    start = time.monotonic()
    stage, root = build.stage, build.root
    parent = parent_image(build)
    tag = tag_for(str(record["key"]), parent)
    # (layer, the file it comes from, offset): the image in pieces, then other outputs and reports.
    layers: list[tuple[dict[str, Any], Path, int]] = []
    size = stage.output.stat().st_size
    for index, offset in enumerate(range(0, size, remote.chunk_size)):
        part = min(remote.chunk_size, size - offset)
        layers.append((_layer(PART_TYPE, stage_files.range_digest(stage.output, offset, part), part,
                              f"{stage.output.name}.{index:04d}"), stage.output, offset))
    for path in stage.extra_outputs:
        length = path.stat().st_size
        layers.append((_layer(FILE_TYPE, stage_files.range_digest(path, 0, length), length,
                              keys.relpath(path, root)), path, 0))
    for name, digest in sorted((record.get("reports") or {}).items()):
        path = (build.reports or root) / name
        # Only reports still as this build left them (a later stage may have rewritten one).
        if build.reports is not None and path.is_file() and checker.hash_file(path)[0] == digest:
            layers.append((_layer(FILE_TYPE, digest, path.stat().st_size, REPORTS + name), path, 0))
    sent = skipped = 0
    for layer, path, offset in layers:
        if registry.has_blob(layer["digest"]):
            skipped += 1
            continue
        registry.upload(layer["digest"], layer["size"], _Range(path, offset, layer["size"]))
        sent += layer["size"]
    config = keys.canonical(record).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    if not registry.has_blob(config_digest):
        registry.upload(config_digest, len(config), config)
    notes = {
        f"{NOTE}name": stage.name,
        f"{NOTE}key": str(record["key"]),
        f"{NOTE}parent-key": str(record.get("parent_key") or ""),
        f"{NOTE}parent-image-sha256": parent or "",
        f"{NOTE}image-sha256": str(record.get("image_sha256", "")),
        f"{NOTE}tools": keys.canonical(record.get("tools") or {}),
        f"{NOTE}record": keys.canonical(record),
        CREATED: str(record.get("finished", "")),
    }
    registry.put_manifest(tag, {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": RECORD_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [layer for layer, _path, _offset in layers],
        "annotations": notes,
    })
    return Transfer(f"{registry.repository}:{tag}", len(layers), sent, skipped, time.monotonic() - start)


def pull_stage(registry: Registry, build: StageBuild, record: dict[str, Any]) -> Transfer | None:
    """Put the stage stored for ``record``'s key (on this machine's parent image) in place,
    verified; None when the registry has none."""
    start = time.monotonic()
    stage = build.stage
    parent = parent_image(build)
    tag = tag_for(str(record["key"]), parent)
    found = registry.manifest(tag)
    if found is None:
        return None
    manifest, manifest_digest = found
    config = manifest.get("config") or {}
    layers = manifest.get("layers")
    if config.get("mediaType") != RECORD_TYPE or not isinstance(layers, list):
        raise RemoteDataError(f"{tag[:16]}… is not a vaultdoit stage")
    remote_record = _record(registry, config)
    if remote_record.get("key") != record["key"] or remote_record.get("parent_image_sha256") != parent:
        raise RemoteDataError(f"{tag[:16]}… holds a stage of another key or parent")
    targets = _targets(build, layers)
    folder = stage.output.parent
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    image_tmp = stage_files.temporary(stage.output, "pull")
    received: dict[Path, Path] = {}
    moved = 0
    try:
        with open(image_tmp, "wb") as out:
            whole = stage_files.Receiver(out)
            for layer in layers:
                if layer.get("mediaType") == PART_TYPE:
                    moved += registry.download(layer["digest"], int(layer["size"]), whole.write)
        if whole.digest != remote_record.get("image_sha256"):
            raise RemoteDataError(f"the image of {tag[:16]}… does not match the digest in its record")
        received[stage.output] = image_tmp
        for layer in layers:
            if layer.get("mediaType") != PART_TYPE:
                target = targets[layer["annotations"][TITLE]]
                tmp = stage_files.temporary(target, "pull")
                tmp.parent.mkdir(parents=True, exist_ok=True)
                received[target] = tmp
                with open(tmp, "wb") as out:
                    moved += registry.download(layer["digest"], int(layer["size"]), out.write)
        _check_image(image_tmp, build)
    except BaseException:
        stage_files.discard(image_tmp, *received.values())
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    seconds = time.monotonic() - start
    stage_files.install(stage.output, {
        **remote_record, **record, "apt": None,  # no APT traffic here (the builder's is in the registry)
        "pulled": {"from": f"{registry.repository}:{tag}", "manifest": manifest_digest,
                   "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(seconds, 1)},
    }, received)
    checker.record_digest(stage.output, build.digests, digest=whole.digest)
    return Transfer(f"{registry.repository}:{tag}", len(layers), moved, 0, seconds)


def _record(registry: Registry, config: dict[str, Any]) -> dict[str, Any]:
    size = int(config.get("size") or 0)
    if not 0 < size <= RECORD_LIMIT:
        raise RemoteDataError(f"the build record is {size} bytes")
    buffer = io.BytesIO()
    registry.download(str(config.get("digest")), size, buffer.write)
    try:
        data = json.loads(buffer.getvalue())
    except ValueError:
        raise RemoteDataError("the build record is not JSON") from None
    if not isinstance(data, dict):
        raise RemoteDataError("the build record is not an object")
    return data


def _targets(build: StageBuild, layers: list[Any]) -> dict[str, Path]:
    """Where each file layer goes (by its title): the stage's other outputs and its reports.
    Anything else (a path this project does not expect) refuses the whole artifact."""
    expected = {keys.relpath(path, build.root): path for path in build.stage.extra_outputs}
    targets: dict[str, Path] = {}
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str) \
                or not isinstance(layer.get("size"), int):
            raise RemoteDataError("a layer without digest or size")
        if layer.get("mediaType") == PART_TYPE:
            continue
        title = (layer.get("annotations") or {}).get(TITLE, "")
        if title in expected:
            targets[title] = expected[title]
        elif title.startswith(REPORTS) and build.reports is not None \
                and stage_files.REPORT_NAME.fullmatch(title[len(REPORTS):]):
            targets[title] = build.reports / title[len(REPORTS):]
        else:
            raise RemoteDataError(f"unexpected file {title!r} in the artifact")
    missing = sorted(set(expected) - set(targets))
    if missing:
        raise RemoteDataError(f"the artifact lacks {missing[0]}")
    return targets


def _check_image(image: Path, build: StageBuild) -> None:
    """The received image is a qcow2 whose backing reference resolves to this machine's parent."""
    from vaultdoit import qemu_img
    from vaultdoit.errors import ArtifactError

    try:
        qemu_img.check_stage(image, build.backing)
    except ArtifactError as err:
        raise RemoteDataError(err.message) from None


# --------------------------------------------------------------------------- the build's hooks

_FAILED: dict[str, str] = {}  # repositories that failed in this process: not asked again
_LOCK = threading.Lock()


def _usable(remote: RemoteCache) -> bool:
    with _LOCK:
        return remote.repository not in _FAILED


def _failed(remote: RemoteCache, err: VaultError) -> None:
    """One warning per repository and run; later stages build without asking it."""
    with _LOCK:
        first = remote.repository not in _FAILED
        _FAILED[remote.repository] = str(err)
    if first:
        note(f"warning: remote cache {remote.repository} unavailable ({err}); building locally")


def before_build(build: StageBuild, record: dict[str, Any]) -> bool:
    """Pull the stage ``build`` would make from the shared cache: True if it is now in place."""
    remote = build.remote
    if remote is None or not _usable(remote):
        return False
    name = build.stage.id
    try:
        from vaultdoit import packer

        packer.recover(build.state_dir, build.stage)  # an interrupted build's leftovers first
        result = pull_stage(Registry(remote.repository), build, record)
    except RemoteDataError as err:
        note(f"warning: stage {name}: discarded what the remote cache sent ({err}); building it here")
        return False
    except RemoteError as err:
        _failed(remote, err)
        return False
    except OSError as err:
        note(f"warning: stage {name}: could not write what the remote cache sent ({err}); building it here")
        return False
    except Exception as err:  # noqa: BLE001 - the cache is optional: a fault in it never fails a build
        _failed(remote, RemoteError(f"internal error: {type(err).__name__}: {err}"))
        return False
    if result is None:
        note(f"stage {name}: not in the remote cache; building it")
        return False
    note(f"stage {name}: {result.summary('pulled from')}")
    return True


def after_build(build: StageBuild, record: dict[str, Any]) -> None:
    """Push a stage just built (unless pushing is off here); a failure is a warning."""
    remote = build.remote
    if remote is None or not remote.push or not _usable(remote):
        return
    try:
        result = push_stage(Registry(remote.repository), remote, build, record)
    except RemoteError as err:
        _failed(remote, err)
        return
    except OSError as err:
        note(f"warning: stage {build.stage.id}: not pushed ({err})")
        return
    except Exception as err:  # noqa: BLE001 - the cache is optional: a fault in it never fails a build
        _failed(remote, RemoteError(f"internal error: {type(err).__name__}: {err}"))
        return
    note(f"stage {build.stage.id}: {result.summary('pushed to')}")


# --------------------------------------------------------------------------- by hand: vaultdoit cache push|pull


def _builds(project: Any, names: Iterable[str], *, ancestors: bool) -> list[StageBuild]:
    """The planned builds of the named stages (all when none), parents first."""
    from vaultdoit.errors import ConfigError
    from vaultdoit.tasks.specs import stage_build

    wanted = list(names)
    known = [s.id for s in project.stages]
    for name in wanted:
        if name not in known:
            raise ConfigError(f"no stage named {name!r}", hint="pick one of: " + ", ".join(known))
    chosen = set(wanted or known)
    if ancestors:
        chosen |= {s.id for name in list(chosen) for s in project.chain(project.stage(name))}
    return [stage_build(project, s) for s in project.stages if s.id in chosen]


def _configured(project: Any) -> RemoteCache:
    from vaultdoit.errors import ConfigError

    remote = spec(project.config)
    if remote is None:
        raise ConfigError("no remote cache is configured", file=project.config.config_file,
                          hint='set remote_cache = "<registry>/<repository>" or VAULTDOIT_REMOTE_CACHE')
    return remote


def push_stages(project: Any, names: Iterable[str]) -> list[str]:
    """Push the named stages (all when none) that are built for today's inputs; one line each."""
    remote = _configured(project)
    registry = Registry(remote.repository)
    root = project.config.root
    planned = keys.planned_keys(project.stages, root, project.config.state_dir / "digests.json")
    lines = []
    for build in _builds(project, names, ancestors=False):
        name = build.stage.id
        record = owned.read_marker(build.stage.output.parent)
        if record is None or record.get("key") != planned[name] or not build.stage.output.is_file():
            lines.append(f"stage {name}: not built for today's inputs, not pushed (build it first)")
            continue
        lines.append(f"stage {name}: {push_stage(registry, remote, build, record).summary('pushed to')}")
    return lines


def pull_stages(project: Any, names: Iterable[str]) -> list[str]:
    """Pull the named stages (all when none) and their parents where this project's are not
    built for today's inputs; then record them as up to date for doit. One line each."""
    from vaultdoit import packer, state

    remote = _configured(project)
    registry = Registry(remote.repository)
    lines: list[str] = []
    missing: set[str] = set()
    for build in _builds(project, names, ancestors=True):
        stage = build.stage
        if stage.parent in missing:
            lines.append(f"stage {stage.id}: its parent is not here, not pulled")
            missing.add(stage.id)
            continue
        parent_key = owned.read_marker(build.parent.output.parent) if build.parent else None
        record = keys.compute(stage, parent_key.get("key") if parent_key else None, build.root, build.digests)
        current = owned.read_marker(stage.output.parent)
        if current is not None and current.get("key") == record["key"] and stage.output.is_file() \
                and not packer.interrupted(build.state_dir, stage):
            lines.append(f"stage {stage.id}: up to date here")
            continue
        packer.recover(build.state_dir, stage)
        result = pull_stage(registry, build, record)
        if result is None:
            lines.append(f"stage {stage.id}: not in the remote cache ({tag_for(record['key'], parent_image(build))})")
            missing.add(stage.id)
        else:
            lines.append(f"stage {stage.id}: {result.summary('pulled from')}")
    project.config.state_dir.mkdir(parents=True, exist_ok=True)
    state.adopt(project, state.db_path(project))
    return lines
