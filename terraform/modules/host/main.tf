# One host of a lab spread over several: its pool (with its own copy of the base image, kernel and
# initrd, uploaded by the provider), its lab network and its nodes. The root module passes this
# host's provider alias in. Only the first host's network has the gateway (and NAT and DHCP); the
# others are plain bridges that halab's VXLAN tunnel joins to it, so the lab is one L2 segment.

resource "libvirt_pool" "lab" {
  name = "${var.lab}-pool"
  path = var.pool_path
}

resource "libvirt_network" "lab" {
  name      = var.network.name
  bridge    = var.network.bridge
  mode      = var.gateway ? var.network.mode : "isolated"
  addresses = var.gateway ? [var.network.cidr] : []
  running   = true

  dynamic "dhcp_host" {
    for_each = var.gateway ? var.dhcp_nodes : {}
    content {
      mac  = lower(dhcp_host.value.mac)
      ip   = dhcp_host.value.ip
      name = dhcp_host.key
    }
  }
}

resource "libvirt_volume" "base" {
  name   = "${var.lab}-base.qcow2"
  pool   = libvirt_pool.lab.name
  format = "qcow2"
  source = var.base_image
}

resource "libvirt_volume" "kernel" {
  name   = "${var.lab}-vmlinuz"
  pool   = libvirt_pool.lab.name
  format = "raw"
  source = var.kernel
}

resource "libvirt_volume" "initrd" {
  name   = "${var.lab}-initrd.img"
  pool   = libvirt_pool.lab.name
  format = "raw"
  source = var.initrd
}

module "node" {
  source   = "../node"
  for_each = var.nodes

  lab            = var.lab
  node           = each.value
  pool           = libvirt_pool.lab.name
  base_volume_id = libvirt_volume.base.id
  kernel         = libvirt_volume.kernel.path
  initrd         = libvirt_volume.initrd.path
  cmdline        = var.cmdline
  accel          = var.accel
  network_name   = libvirt_network.lab.name
  console_log    = var.console_log ? "${var.pool_path}/${var.lab}-${each.key}.log" : null
}
