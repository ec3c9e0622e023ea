variable "lab" {
  description = "Lab name (prefix of every object, and the owner in the domain's metadata)."
  type        = string
}

variable "node" {
  description = "The node, as in the root module's nodes map."
  type = object({
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
  })
}

variable "pool" {
  description = "Storage pool name."
  type        = string
}

variable "base_volume_id" {
  description = "Id of the base image volume the node's overlay is backed by."
  type        = string
}

variable "kernel" {
  type = string
}

variable "initrd" {
  type = string
}

variable "cmdline" {
  type = string
}

variable "accel" {
  type = string
}

variable "network_name" {
  type = string
}

variable "console_log" {
  description = "Serial console log file, or null for a pty only."
  type        = string
  default     = null
}
