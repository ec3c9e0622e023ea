output "domain_name" {
  value = libvirt_domain.node.name
}

output "domain_id" {
  value = libvirt_domain.node.id
}
