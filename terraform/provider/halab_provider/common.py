"""Helpers shared by the resources: libvirt errors as diagnostics, XML, ownership guard."""

from __future__ import annotations

import contextlib
import threading
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import libvirt
from tf.iface import Resource, UpgradeContext
from tf.types import Unknown
from tf.utils import Diagnostics

if TYPE_CHECKING:
    from halab_provider.provider import LibvirtProvider

State = dict[str, Any]

# The ownership tag's namespace; halab.lab.virt.HALAB_XMLNS is the source (the provider runs without
# halab on its path), and a test checks the two agree.
HALAB_NS = "https://halab.dev/xmlns/lab/1"

# libvirt's default handler prints every error to stderr; we report errors as diagnostics.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

# Terraform creates resources concurrently, but a libvirt dir pool refuses createXML/refresh/delete
# while an upload stream into it runs ("pool has asynchronous jobs running"). Volume work in this
# provider process is serialised; uploads are seconds, so the cost is small.
POOL_LOCK = threading.RLock()

NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
}


class ProviderError(Exception):
    """A failure with a message meant for the Terraform user (becomes an error diagnostic)."""

    def __init__(self, summary: str, detail: str = ""):
        super().__init__(summary)
        self.summary = summary
        self.detail = detail


def is_not_found(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in NOT_FOUND_CODES


@contextlib.contextmanager
def reported(diags: Diagnostics, what: str) -> Iterator[None]:
    """Turn libvirt and OS errors raised inside the block into one clear error diagnostic."""
    try:
        yield
    except ProviderError as exc:
        diags.add_error(exc.summary, exc.detail)
    except libvirt.libvirtError as exc:
        diags.add_error(
            f"{what}: {exc.get_error_message() or exc}", f"libvirt error code {exc.get_error_code()}"
        )
    except OSError as exc:
        diags.add_error(f"{what}: {exc}")
    except Exception as exc:  # a provider bug: still a diagnostic the user can quote, not a gRPC crash
        diags.add_error(
            f"{what}: internal error in halab's provider: {type(exc).__name__}: {exc}",
            "".join(traceback.format_exception(exc)[-3:]),
        )


def known(state: State) -> State:
    """The planned state with Unknown (computed, not yet known) values as None, blocks included."""

    def fix(v: Any) -> Any:
        if v is Unknown:
            return None
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    return {k: fix(v) for k, v in state.items()}


def xml_text(el: ET.Element | None, path: str, default: str | None = None) -> str | None:
    if el is None:
        return default
    found = el.find(path)
    if found is None or found.text is None:
        return default
    return found.text


def check_prefix(provider: LibvirtProvider, kind: str, name: str) -> None:
    prefix = provider.name_prefix
    if prefix and not name.startswith(prefix):
        raise ProviderError(
            f"refusing to manage {kind} {name!r}: its name does not start with {prefix!r}",
            "The provider is configured with name_prefix; halab only touches objects of its own lab.",
        )


class BaseResource(Resource):
    """Common plumbing: the provider instance and a schema-version-0 upgrade that stays quiet."""

    def __init__(self, provider: LibvirtProvider):
        self.provider = provider

    @property
    def conn(self) -> libvirt.virConnect:
        return self.provider.connection()

    def upgrade(self, ctx: UpgradeContext, version: int, old: dict[str, Any]) -> State | None:
        # Schema version 0 is the only version so far: nothing to migrate, nothing to warn about.
        return old
