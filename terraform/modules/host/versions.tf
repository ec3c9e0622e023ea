terraform {
  required_providers {
    libvirt = {
      source = "halab.local/halab/libvirt"
    }
  }
}
