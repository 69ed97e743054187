# Plugins of the vault-cube templates, for Packer 1.7 and newer: run
#   packer init packer/vault-cube/plugins
# once. This block lives apart from the stage templates because Packer loads
# every *.pkr.hcl of a folder and Packer 1.6.6 (Debian 12's) refuses it
# ("Blocks of type required_plugins are not expected here"); 1.6.6 has both
# the QEMU builder and the Ansible provisioner built in and needs no init.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
    ansible = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/ansible"
    }
  }
}
