output "inventory" {
  description = "This host's nodes: name, role, IP, MAC, libvirt domain name and host."
  value = {
    for k, n in var.nodes : k => {
      name   = n.name
      role   = n.role
      ip     = n.ip
      mac    = lower(n.mac)
      domain = module.node[k].domain_name
      host   = var.host
    }
  }
}

output "network" {
  description = "This host's lab network as libvirt has it."
  value = {
    name      = libvirt_network.lab.name
    bridge    = libvirt_network.lab.bridge
    cidr      = var.network.cidr
    gateway   = var.gateway ? var.network.gateway : null
    mode      = libvirt_network.lab.mode
    addresses = libvirt_network.lab.addresses
  }
}

output "base_image" {
  description = "The base image this host's pool was given (uploaded by the provider)."
  value       = libvirt_volume.base.source
}
