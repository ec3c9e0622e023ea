"""Entry point Terraform starts (through the mirror's terraform-provider-libvirt launcher)."""

import sys

from tf.runner import run_provider

from halab_provider.provider import LibvirtProvider


def main(argv: list[str] | None = None) -> None:
    run_provider(LibvirtProvider(), argv or sys.argv)


if __name__ == "__main__":
    main()
