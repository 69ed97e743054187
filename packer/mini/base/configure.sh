# Runs inside the chroot of the mini base stage (sh -eu).
# VAULT_USER and VAULT_BUILD_PUBKEY come from vaultdoit: the build user and the
# build key that the Packer stages log in with. The final stage removes both.

echo vault-mini > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 vault-mini\n' > /etc/hosts
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' > /etc/fstab

# The build user: key login only, passwordless sudo for provisioning.
useradd --create-home --shell /bin/bash --groups sudo "$VAULT_USER"
passwd --lock "$VAULT_USER"
passwd --lock root
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$VAULT_USER" > "/etc/sudoers.d/90-$VAULT_USER"
chmod 0440 "/etc/sudoers.d/90-$VAULT_USER"
install -d -m 0700 -o "$VAULT_USER" -g "$VAULT_USER" "/home/$VAULT_USER/.ssh"
printf '%s\n' "$VAULT_BUILD_PUBKEY" > "/home/$VAULT_USER/.ssh/authorized_keys"
chown "$VAULT_USER:$VAULT_USER" "/home/$VAULT_USER/.ssh/authorized_keys"
chmod 0600 "/home/$VAULT_USER/.ssh/authorized_keys"

# DHCP on the first NIC with systemd-networkd; don't block boot on the network.
cat > /etc/systemd/network/20-wired.network <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes
NET
systemctl enable systemd-networkd.service
systemctl mask systemd-networkd-wait-online.service
# QEMU user networking answers DNS at 10.0.2.3.
printf 'nameserver 10.0.2.3\n' > /etc/resolv.conf

# SSH host keys are made on first boot, so no two machines share them.
cat > /etc/systemd/system/ssh-hostkeys.service <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable ssh-hostkeys.service
systemctl enable ssh.service
rm -f /etc/ssh/ssh_host_*

# The build boots keep their journal in RAM: nothing of the build is logged to
# the image's disk. The final stage's cleanup removes this drop-in, so the
# image's own journal is persistent from its first boot.
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' > /etc/systemd/journald.conf.d/90-vault-build.conf

# Login prompt on the serial console for debugging boots.
systemctl enable serial-getty@ttyS0.service
apt-get clean
rm -rf /var/lib/apt/lists/*
