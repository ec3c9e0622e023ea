# Module logic only: the provider is mocked (it must still be installed: run through halab's mirror).
mock_provider "libvirt" {
  mock_resource "libvirt_volume" {
    defaults = {
      id   = "/pool/mock-volume"
      path = "/pool/mock-volume"
    }
  }
}

variables {
  lab         = "t1"
  libvirt_uri = "test:///default"
  network = {
    name    = "t1-net"
    bridge  = "hlt1"
    cidr    = "10.77.0.0/24"
    mode    = "nat"
    gateway = "10.77.0.1"
  }
  pool_path  = "/var/lib/libvirt/images/t1"
  base_image = "/cache/base.qcow2"
  kernel     = "/cache/vmlinuz"
  initrd     = "/cache/initrd.img"
  accel      = "qemu"
  nodes = {
    "haproxy-1" = {
      name           = "haproxy-1", role = "haproxy", ip = "10.77.0.11", mac = "52:54:00:AA:00:01"
      memory_mib     = 512, vcpus = 1, user_data = "#cloud-config\n", meta_data = "instance-id: t1-haproxy-1\n"
      network_config = "version: 2\n"
    }
    "api-1" = {
      name           = "api-1", role = "api", ip = "10.77.0.12", mac = "52:54:00:aa:00:02"
      memory_mib     = 512, vcpus = 1, user_data = "#cloud-config\n", meta_data = "instance-id: t1-api-1\n"
      network_config = "version: 2\n", running = false
    }
  }
}

run "objects_are_named_and_owned_by_the_lab" {
  command = apply

  assert {
    condition     = libvirt_pool.lab.name == "t1-pool" && libvirt_network.lab.name == "t1-net"
    error_message = "pool and network names must carry the lab prefix"
  }

  assert {
    condition     = module.node["api-1"].domain_name == "t1-api-1"
    error_message = "domain name must be <lab>-<node>"
  }

  assert {
    condition     = length(libvirt_network.lab.dhcp_host) == 2
    error_message = "every node gets a static DHCP host entry"
  }

  assert {
    condition = output.inventory["haproxy-1"] == {
      name = "haproxy-1", role = "haproxy", ip = "10.77.0.11", mac = "52:54:00:aa:00:01", domain = "t1-haproxy-1"
    }
    error_message = "inventory lists name, role, ip, lower-case mac and domain"
  }

  assert {
    condition     = output.inventory["api-1"].domain == "t1-api-1"
    error_message = "inventory names the domain"
  }
}

run "node_module_wires_disks_kernel_and_metadata" {
  command = plan

  module {
    source = "./modules/node"
  }

  variables {
    node = {
      name       = "db-1", role = "db", ip = "10.77.0.13", mac = "52:54:00:AA:00:03"
      memory_mib = 1024, vcpus = 2, user_data = "u", meta_data = "m", network_config = "n"
    }
    pool           = "t1-pool"
    base_volume_id = "/pool/t1-base.qcow2"
    kernel         = "/pool/t1-vmlinuz"
    initrd         = "/pool/t1-initrd.img"
    cmdline        = "root=/dev/vda rw"
    network_name   = "t1-net"
    console_log    = "/pool/t1-db-1.log"
  }

  assert {
    condition     = libvirt_domain.node.name == "t1-db-1" && libvirt_domain.node.lab == "t1"
    error_message = "domain name and owner"
  }

  assert {
    condition     = libvirt_domain.node.role == "db" && libvirt_domain.node.node == "db-1"
    error_message = "metadata carries node and role"
  }

  assert {
    condition     = libvirt_domain.node.memory == 1024 && libvirt_domain.node.vcpu == 2 && libvirt_domain.node.running
    error_message = "size and running come from the node"
  }

  assert {
    condition     = libvirt_volume.disk.base_volume_id == "/pool/t1-base.qcow2" && libvirt_volume.disk.format == "qcow2"
    error_message = "the node disk is a qcow2 overlay on the base"
  }

  assert {
    condition     = libvirt_cloudinit_disk.seed.name == "t1-db-1-seed.iso"
    error_message = "seed volume name"
  }

  assert {
    condition     = one(libvirt_domain.node.network_interface).mac == "52:54:00:aa:00:03"
    error_message = "MAC is lower-cased for libvirt"
  }
}

run "rejects_a_gateway_outside_the_network" {
  command = plan

  variables {
    network = {
      name    = "t1-net"
      bridge  = "hlt1"
      cidr    = "10.77.0.0/24"
      mode    = "nat"
      gateway = "10.78.0.1"
    }
  }

  expect_failures = [var.network]
}

run "rejects_an_unknown_accelerator" {
  command = plan

  variables {
    accel = "tcg"
  }

  expect_failures = [var.accel]
}
