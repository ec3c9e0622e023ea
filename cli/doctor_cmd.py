from cli.common import placeholder


def register(sub) -> None:
    placeholder(sub, "doctor", "check the host: terraform, libvirt, QEMU, KVM, disk, memory", 2)
