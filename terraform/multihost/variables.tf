# The root module of a lab spread over several hosts (lab.yaml `hosts:`). halab generates main.tf
# and outputs.tf beside this file (one provider alias and one host module per host); see
# docs/MULTIHOST.md. Fed by the tfvars JSON halab generates from lab.yaml.

variable "lab" {
  description = "Lab name; prefixes every libvirt object the lab owns."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.lab))
    error_message = "The lab name must be lowercase letters, digits and '-', starting with a letter, at most 20 characters."
  }
}

variable "hosts" {
  description = "The lab's hosts by name: libvirt URI, pool directory and whether its network has the gateway."
  type = map(object({
    uri       = string
    pool_path = string
    gateway   = bool
  }))

  validation {
    condition     = length([for h in values(var.hosts) : h if h.gateway]) == 1
    error_message = "Exactly one host carries the gateway."
  }
}

variable "network" {
  description = "The lab network: libvirt name, bridge device, CIDR, mode (nat|isolated) and gateway (first host)."
  type = object({
    name    = string
    bridge  = string
    cidr    = string
    mode    = string
    gateway = string
  })

  validation {
    condition     = contains(["nat", "isolated"], var.network.mode)
    error_message = "network.mode must be \"nat\" or \"isolated\"."
  }

  validation {
    condition     = can(cidrhost(var.network.cidr, 1)) && cidrhost(var.network.cidr, 1) == var.network.gateway
    error_message = "network.gateway must be the first host address of network.cidr (libvirt puts the host there)."
  }

  validation {
    condition     = length(var.network.bridge) <= 15
    error_message = "network.bridge must be at most 15 characters (a Linux limit)."
  }
}

variable "base_image" {
  description = "Local path of the base image (qcow2)."
  type        = string
}

variable "kernel" {
  description = "Local path of the kernel for direct boot."
  type        = string
}

variable "initrd" {
  description = "Local path of the initrd for direct boot."
  type        = string
}

variable "accel" {
  description = "Domain type: kvm or qemu (TCG)."
  type        = string
  default     = "kvm"

  validation {
    condition     = contains(["kvm", "qemu"], var.accel)
    error_message = "accel must be \"kvm\" or \"qemu\"."
  }
}

variable "cmdline" {
  description = "Kernel command line for every node."
  type        = string
  default     = "root=/dev/vda rw console=ttyS0 net.ifnames=0 ds=nocloud"
}

variable "console_log" {
  description = "Log each node's serial console to <pool_path>/<lab>-<node>.log."
  type        = bool
  default     = true
}

variable "nodes" {
  description = "The lab's nodes, keyed by node name (e.g. api-1)."
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
    host           = string
  }))

  validation {
    condition     = alltrue([for n in values(var.nodes) : contains(keys(var.hosts), n.host)])
    error_message = "Every node's host must be one of hosts."
  }

  validation {
    condition     = alltrue([for k, n in var.nodes : k == n.name])
    error_message = "Each node's key must equal its name."
  }

  validation {
    condition     = alltrue([for n in values(var.nodes) : contains(["haproxy", "api", "db", "mq"], n.role)])
    error_message = "Node roles must be haproxy, api, db or mq."
  }

  validation {
    condition     = length(distinct([for n in values(var.nodes) : lower(n.mac)])) == length(var.nodes)
    error_message = "Node MAC addresses must be unique."
  }

  validation {
    condition     = length(distinct([for n in values(var.nodes) : n.ip])) == length(var.nodes)
    error_message = "Node IP addresses must be unique."
  }
}
