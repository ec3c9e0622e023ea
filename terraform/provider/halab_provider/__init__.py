"""halab's Terraform provider for libvirt, written with the `tf` framework.

Source address ``halab.local/halab/libvirt``. Resources in the flat style of the community libvirt
provider: ``libvirt_pool``, ``libvirt_network``, ``libvirt_volume``, ``libvirt_cloudinit_disk`` and
``libvirt_domain``. Read reports what libvirt really has, so changes made outside Terraform show up
as drift in ``terraform plan``.
"""

VERSION = "0.1.0"
SOURCE = "halab.local/halab/libvirt"
