terraform {
  required_version = ">= 1.6"

  required_providers {
    libvirt = {
      # halab's own provider, installed offline from the filesystem mirror halab writes.
      source  = "halab.local/halab/libvirt"
      version = "0.1.0"
    }
  }
}
