# The mini profile: three Packer stages, each a qcow2 overlay on its parent.
# One source holds the VM settings; each build names its instance and points
# iso_url at the parent stage's image, which is how vaultdoit finds the chain.
# Two variants (vault.toml): drivers and frameworks are the same for both and
# built once; the final stage differs, so it writes a folder per variant.

source "qemu" "stage" {
  disk_image       = true
  iso_checksum     = "none"
  use_backing_file = true
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  # fstrim in the guest frees blocks in the overlay: deleted files (the wheelhouse,
  # what the cleanup removes) leave no data behind, in the image or on disk.
  disk_discard     = "unmap"
  net_device       = "virtio-net"
  accelerator      = var.accelerator
  # Set by vaultdoit for each build (sized to the host, in no stage's key; see vault.toml).
  memory           = var.memory
  cpus             = var.cpus
  headless         = true
  # Each build side by side gets its own window of ports from vaultdoit (not VNC: Packer 1.6
  # gives QEMU the display port - vnc_port_min, right only for 5900).
  host_port_min     = var.host_port_min
  host_port_max     = var.host_port_max
  http_port_min     = var.http_port_min
  http_port_max     = var.http_port_max
  # The image boots by itself (no boot command to type): don't wait 10 s for it.
  boot_wait        = "1s"
  vnc_bind_address = "127.0.0.1"
  qemuargs = [
    ["-kernel", local.kernel],
    ["-initrd", local.initrd],
    ["-append", "root=/dev/vda rw console=ttyS0"],
    # Each build VM's console goes to its own log.
    ["-serial", "file:${var.log_dir}/serial-{{ .Name }}.log"],
    # Forward SSH on loopback only (Packer's default listens on every address).
    ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
  ]
  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "20m"
  # Ansible's temporary files can only go once Ansible is done: at shutdown. The
  # final stage's cleanup adds a last step that runs after everything else at power-off.
  shutdown_command = "sudo sh -c 'rm -rf /tmp/* /var/tmp/* /root/.ansible /home/${var.ssh_username}/.ansible; fstrim -a || true; shutdown -P now'"
}

build {
  source "source.qemu.stage" {
    name             = "drivers"
    iso_url          = "${var.build_dir}/base/base.qcow2"
    output_directory = "${var.build_dir}/drivers"
    vm_name          = "drivers.qcow2"
  }

  provisioner "ansible" {
    playbook_file   = "ansible/drivers.yml"
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
    playbook_file   = "ansible/frameworks.yml"
    use_proxy       = false
    user            = var.ssh_username
    extra_arguments = ["--extra-vars", "vault_stage=frameworks wheelhouse_dir=${abspath(var.wheelhouse)} report_dir=${abspath(var.report_dir)} apt_proxy=${var.apt_proxy}"]
  }
}

build {
  source "source.qemu.stage" {
    name             = "final"
    iso_url          = "${var.build_dir}/frameworks/frameworks.qcow2"
    output_directory = "${var.build_dir}/${var.variant}/final"
    vm_name          = "final.qcow2"
  }

  provisioner "ansible" {
    playbook_file   = "ansible/final.yml"
    use_proxy       = false
    user            = var.ssh_username
    extra_arguments = ["--extra-vars", "vault_stage=final variant=${var.variant} access_pubkey_file=${abspath(var.access_pubkey_file)} report_dir=${abspath(var.report_dir)} apt_proxy=${var.apt_proxy}"]
  }
}
