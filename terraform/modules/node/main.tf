resource "libvirt_volume" "disk" {
  name           = "${var.lab}-${var.node.name}.qcow2"
  pool           = var.pool
  format         = "qcow2"
  base_volume_id = var.base_volume_id
}

resource "libvirt_cloudinit_disk" "seed" {
  name           = "${var.lab}-${var.node.name}-seed.iso"
  pool           = var.pool
  user_data      = var.node.user_data
  meta_data      = var.node.meta_data
  network_config = var.node.network_config
}

resource "libvirt_domain" "node" {
  name        = "${var.lab}-${var.node.name}"
  memory      = var.node.memory_mib
  vcpu        = var.node.vcpus
  accel       = var.accel
  kernel      = var.kernel
  initrd      = var.initrd
  cmdline     = var.cmdline
  disks       = [libvirt_volume.disk.id, libvirt_cloudinit_disk.seed.id]
  running     = var.node.running
  lab         = var.lab
  node        = var.node.name
  role        = var.node.role
  console_log = var.console_log

  network_interface {
    network_name = var.network_name
    mac          = lower(var.node.mac)
    addresses    = [var.node.ip]
  }
}
