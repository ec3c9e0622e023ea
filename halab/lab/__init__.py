"""Building and operating the lab: config, image, seeds, Terraform, secrets, accelerator, doctor,
libvirt, SSH, lifecycle and checkpoints."""
