# Variables of the vault-cube profile. vaultdoit passes `accelerator` (probed)
# and `apt_proxy` (its apt-cacher-ng as the guest sees it) at build time, and
# points `iso_url`/`iso_checksum` at the verified copy in cache/isos/;
# vault.toml may set any of them ([profiles.vault-cube.variables]).

# The Ubuntu 24.04 live-server ISO, fetched once into cache/isos/ by
# cache:iso-<file> and verified against Ubuntu's published SHA256SUMS (the
# checksum is never written here). The release folder keeps only the newest
# 24.04 point release: when Ubuntu ships the next one, change the file name
# (not checked from this project's machines: a wrong name fails cache:iso with
# the server's 404 before any VM starts).
variable "iso_url" {
  type    = string
  default = "https://releases.ubuntu.com/24.04/ubuntu-24.04.3-live-server-amd64.iso"
}

variable "iso_checksum" {
  type    = string
  default = "file:https://releases.ubuntu.com/24.04/SHA256SUMS"
}

# demo or production: read by the final stage only (packer/vault-cube/variants/).
variable "variant" {
  type    = string
  default = "demo"
}

variable "build_dir" {
  type    = string
  default = "build/vault-cube/stages"
}

variable "accelerator" {
  type    = string
  default = "kvm"
}

# Set by vaultdoit at build time; never part of a stage's key and never left in
# the image (the installer gets it on its kernel command line, the playbooks as
# an environment variable).
variable "apt_proxy" {
  type    = string
  default = ""
}

# Build VM resources (the seed's OPT-7: 4 GiB and 2 CPUs leave a laptop usable).
# vaultdoit sets them from vault.toml (memory, cpus), or sized to the host.
# They change how fast a stage builds, not what it contains: no stage key holds them.
variable "memory" {
  type    = number
  default = 4096
}

variable "cpus" {
  type    = number
  default = 2
}

# One virtual size for every stage: the later stages are overlays of the base's
# disk, whose partitions the installer lays out once. Sparse: an image holds only
# what is written (about 40 GB after the frameworks stage).
variable "disk_size" {
  type    = string
  default = "80G"
}

variable "ssh_username" {
  type    = string
  default = "vault"
}

variable "ssh_private_key_file" {
  type    = string
  default = "build/keys/build_ed25519"
}

variable "access_pubkey_file" {
  type    = string
  default = "build/keys/access_ed25519.pub"
}

variable "log_dir" {
  type    = string
  default = "build/logs/vault-cube"
}

variable "report_dir" {
  type    = string
  default = "build/vault-cube/reports"
}

# Wheels and model files fetched on the build host and kept between builds.
variable "wheel_cache" {
  type    = string
  default = "cache/wheels/vault-cube"
}

variable "model_cache" {
  type    = string
  default = "cache/models"
}

locals {
  # The build key's public half reaches the installer on its kernel command line
  # (typed at the GRUB prompt), as "type,base64": the user-data holds a placeholder.
  # file() reads relative to this folder; the key path is relative to the project (where Packer runs).
  build_key_words = split(" ", trimspace(file(abspath("${var.ssh_private_key_file}.pub"))))
  build_key       = "${local.build_key_words[0]},${local.build_key_words[1]}"
}
