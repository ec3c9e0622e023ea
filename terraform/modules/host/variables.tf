variable "lab" {
  description = "Lab name (prefix of every object)."
  type        = string
}

variable "host" {
  description = "The host's name in lab.yaml."
  type        = string
}

variable "gateway" {
  description = "Whether this host's lab network carries the gateway, NAT and DHCP (the first host)."
  type        = bool
}

variable "network" {
  description = "The lab network, as in the root module."
  type = object({
    name    = string
    bridge  = string
    cidr    = string
    mode    = string
    gateway = string
  })
}

variable "pool_path" {
  description = "Directory of the lab's storage pool on this host."
  type        = string
}

variable "base_image" {
  description = "Local path of the base image, uploaded into this host's pool."
  type        = string
}

variable "kernel" {
  type = string
}

variable "initrd" {
  type = string
}

variable "accel" {
  type = string
}

variable "cmdline" {
  type = string
}

variable "console_log" {
  type = bool
}

variable "nodes" {
  description = "The nodes placed on this host."
  type = map(object({
    name           = string
    role           = string
    ip             = string
    mac            = string
    memory_mib     = number
    vcpus          = number
    user_data      = string
    meta_data      = string
    network_config = string
    running        = optional(bool, true)
  }))
}

variable "dhcp_nodes" {
  description = "Every node of the lab (the gateway host's DHCP knows them all)."
  type = map(object({
    mac = string
    ip  = string
  }))
  default = {}
}
