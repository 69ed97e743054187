"""The files published beside a final image, by name (no I/O, cheap to import)."""

from __future__ import annotations

from pathlib import Path

SIGNATURE = ".sig"


def checksum_path(image: Path) -> Path:
    """sha256 of the image and of the kernel and initrd beside it (``sha256sum -c`` format)."""
    return image.with_name(image.name + ".sha256")


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


def sbom_path(image: Path) -> Path:
    """The CycloneDX SBOM."""
    return image.with_name(image.name + ".cdx.json")


def kernel_path(image: Path) -> Path:
    """The kernel of the image's chain, shipped beside it for a direct-kernel boot."""
    return image.with_suffix(".vmlinuz")


def initrd_path(image: Path) -> Path:
    return image.with_suffix(".initrd.img")


def signature_path(file: Path) -> Path:
    return file.with_name(file.name + SIGNATURE)


def signed_files(image: Path) -> list[Path]:
    """The files whose signatures vouch for ``image``: its checksum file and its SBOM."""
    return [checksum_path(image), sbom_path(image)]
