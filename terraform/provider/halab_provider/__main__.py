"""Entry point Terraform starts (through the mirror's terraform-provider-libvirt launcher)."""

import contextlib
import ctypes
import signal
import sys

from tf.runner import run_provider

from halab_provider.provider import LibvirtProvider


def _exit_with_terraform() -> None:
    """SIGTERM when the Terraform that started this provider dies (a killed run), instead of living on
    as an orphan holding a libvirt connection. Linux prctl(PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def main(argv: list[str] | None = None) -> None:
    _exit_with_terraform()
    run_provider(LibvirtProvider(), argv or sys.argv)


if __name__ == "__main__":
    main()
