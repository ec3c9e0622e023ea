output "inventory" {
  description = "Every node: name, role, IP, MAC and libvirt domain name."
  value = {
    for k, n in var.nodes : k => {
      name   = n.name
      role   = n.role
      ip     = n.ip
      mac    = lower(n.mac)
      domain = module.node[k].domain_name
    }
  }
}

output "network" {
  description = "The lab network as libvirt has it."
  value = {
    name    = libvirt_network.lab.name
    bridge  = libvirt_network.lab.bridge
    cidr    = var.network.cidr
    gateway = var.network.gateway
  }
}
