# The vault-cube profile: four stages (the seed's OPT-1). The base installs
# Ubuntu 24.04 from the live-server ISO with autoinstall; drivers, frameworks
# and final are qcow2 overlays on their parent (iso_url names the parent's
# image, which is how vaultdoit finds the chain). Plugins for Packer >= 1.7:
# plugins/plugins.pkr.hcl (kept out of this folder; see the comment there).

locals {
  # Ansible's temporary files can only go once Ansible is done: at shutdown. The
  # final stage's cleanup adds a last step that runs after everything else at power-off.
  shutdown_command = "sudo sh -c 'rm -rf /tmp/* /var/tmp/* /root/.ansible /home/${var.ssh_username}/.ansible; fstrim -a || true; shutdown -P now'"
}

source "qemu" "base" {
  iso_url          = var.iso_url
  iso_checksum     = var.iso_checksum
  output_directory = "${var.build_dir}/base"
  vm_name          = "base.qcow2"
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  # fstrim in the guest frees blocks in the image: deleted files leave no data behind.
  disk_discard     = "unmap"
  net_device       = "virtio-net"
  accelerator      = var.accelerator
  memory           = var.memory
  cpus             = var.cpus
  headless         = true
  vnc_bind_address = "127.0.0.1"
  # The autoinstall user-data (and its empty meta-data) served by Packer's HTTP server.
  http_directory   = "packer/vault-cube/http"
  # The live-server ISO's GRUB menu: open its command line and boot the installer
  # with autoinstall, the seed's URL, the build key and the APT proxy. Everything
  # before "---" stays out of the installed system's boot loader configuration.
  boot_wait = "10s"
  boot_command = [
    "c<wait5>",
    "linux /casper/vmlinuz autoinstall 'ds=nocloud;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/' ",
    "vault.key=${local.build_key} vault.proxy=${var.apt_proxy} console=ttyS0,115200 ---<enter><wait5>",
    "initrd /casper/initrd<enter><wait15>",
    "boot<enter>",
  ]
  qemuargs = [
    # Each build VM's console goes to its own log (the installer prints its progress there).
    ["-serial", "file:${var.log_dir}/serial-{{ .Name }}.log"],
    # Forward SSH on loopback only (Packer's default listens on every address).
    ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
  ]
  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  # The installation takes about 10 minutes with KVM; the live system's sshd is
  # stopped by the user-data's early-commands, so SSH answers only once the
  # installed system is up.
  ssh_timeout            = "90m"
  ssh_handshake_attempts = 500
  shutdown_command       = local.shutdown_command
}

# The later stages: the image boots from its own disk (GRUB installed by the base).
source "qemu" "stage" {
  disk_image       = true
  iso_checksum     = "none"
  use_backing_file = true
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  disk_discard     = "unmap"
  net_device       = "virtio-net"
  accelerator      = var.accelerator
  memory           = var.memory
  cpus             = var.cpus
  headless         = true
  boot_wait        = "1s"
  vnc_bind_address = "127.0.0.1"
  qemuargs = [
    ["-serial", "file:${var.log_dir}/serial-{{ .Name }}.log"],
    ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
  ]
  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "30m"
  shutdown_command     = local.shutdown_command
}

build {
  sources = ["source.qemu.base"]

  provisioner "ansible" {
    playbook_file   = "ansible/vault-cube/base.yml"
    use_proxy       = false
    user            = var.ssh_username
    extra_arguments = ["--extra-vars", "vault_stage=base build_pubkey_file=${abspath("${var.ssh_private_key_file}.pub")} apt_proxy=${var.apt_proxy}"]
  }
}

build {
  source "source.qemu.stage" {
    name             = "drivers"
    iso_url          = "${var.build_dir}/base/base.qcow2"
    output_directory = "${var.build_dir}/drivers"
    vm_name          = "drivers.qcow2"
  }

  provisioner "ansible" {
    playbook_file   = "ansible/vault-cube/drivers.yml"
    use_proxy       = false
    user            = var.ssh_username
    extra_arguments = ["--extra-vars", "vault_stage=drivers apt_proxy=${var.apt_proxy}"]
  }
}

build {
  source "source.qemu.stage" {
    name             = "frameworks"
    iso_url          = "${var.build_dir}/drivers/drivers.qcow2"
    output_directory = "${var.build_dir}/frameworks"
    vm_name          = "frameworks.qcow2"
  }

  provisioner "ansible" {
    playbook_file   = "ansible/vault-cube/frameworks.yml"
    use_proxy       = false
    user            = var.ssh_username
    extra_arguments = ["--extra-vars", "vault_stage=frameworks wheel_cache=${abspath(var.wheel_cache)} model_cache=${abspath(var.model_cache)} report_dir=${abspath(var.report_dir)} apt_proxy=${var.apt_proxy}"]
  }
}

build {
  source "source.qemu.stage" {
    name             = "final"
    iso_url          = "${var.build_dir}/frameworks/frameworks.qcow2"
    # The variants differ in this stage only: a folder per variant (vaultdoit sets var.variant).
    output_directory = "${var.build_dir}/${var.variant}/final"
    vm_name          = "final.qcow2"
  }

  provisioner "ansible" {
    playbook_file   = "ansible/vault-cube/final.yml"
    use_proxy       = false
    user            = var.ssh_username
    extra_arguments = ["--extra-vars", "vault_stage=final variant=${var.variant} access_pubkey_file=${abspath(var.access_pubkey_file)} report_dir=${abspath(var.report_dir)} apt_proxy=${var.apt_proxy}"]
  }
}
