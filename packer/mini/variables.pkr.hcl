# Variables shared by the mini profile's stages. vaultdoit sets `accelerator`
# (probed: kvm where it works, else tcg), `apt_proxy`, `memory` and `cpus`,
# the port windows, `log_dir` and `report_dir` (the build's own folders) and
# `variant` (the variant's name); vault.toml may set the others
# ([profiles.mini.variables], or a variant's).

variable "build_dir" {
  type    = string
  default = "build/mini/stages"
}

variable "accelerator" {
  type    = string
  default = "tcg"
}

# Set by vaultdoit at build time to its apt-cacher-ng (as the guest sees it);
# never part of a stage's cache key and never written into an image.
variable "apt_proxy" {
  type    = string
  default = ""
}

# demo or production (vault.toml [profiles.mini.variants.*]): read by the final stage only.
variable "variant" {
  type    = string
  default = "demo"
}

variable "memory" {
  type    = number
  default = 1024
}

variable "cpus" {
  type    = number
  default = 2
}

# Packer's own defaults; vaultdoit gives each build running side by side a window of its own.
variable "host_port_min" {
  type    = number
  default = 2222
}

variable "host_port_max" {
  type    = number
  default = 4444
}

variable "http_port_min" {
  type    = number
  default = 8000
}

variable "http_port_max" {
  type    = number
  default = 9000
}

variable "disk_size" {
  type    = string
  default = "3G"
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
  default = "build/logs/mini"
}

variable "report_dir" {
  type    = string
  default = "build/mini/reports"
}

variable "wheelhouse" {
  type    = string
  default = "cache/wheels"
}

locals {
  # The base image has no bootloader: every stage boots its kernel directly.
  kernel = "${var.build_dir}/base/vmlinuz"
  initrd = "${var.build_dir}/base/initrd.img"
}
