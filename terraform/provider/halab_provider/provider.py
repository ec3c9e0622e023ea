"""The provider: configuration (libvirt URI, optional name prefix) and the resource list."""

from __future__ import annotations

import threading
from typing import Any

import libvirt
from tf.iface import Config, DataSource, Resource
from tf.schema import Attribute, Schema
from tf.types import String
from tf.utils import Diagnostics

from halab_provider import SOURCE
from halab_provider.cloudinit import CloudinitDiskResource
from halab_provider.common import ProviderError
from halab_provider.domain import DomainResource
from halab_provider.network import NetworkResource
from halab_provider.pool import PoolResource
from halab_provider.volume import VolumeResource

DEFAULT_URI = "qemu:///system"

# One connection per URI for the life of the process. Terraform calls ConfigureProvider once per
# walk; keeping the connection also keeps the in-process state of libvirt's test:///default driver.
_connections: dict[str, libvirt.virConnect] = {}
_lock = threading.Lock()


def open_connection(uri: str) -> libvirt.virConnect:
    with _lock:
        conn = _connections.get(uri)
        if conn is not None and conn.isAlive():
            return conn
        conn = libvirt.open(uri)
        _connections[uri] = conn
        return conn


class LibvirtProvider:
    def __init__(self, uri: str | None = None, name_prefix: str | None = None):
        self.uri = uri or DEFAULT_URI
        self.name_prefix = name_prefix or ""
        self._conn: libvirt.virConnect | None = None

    # ---- tf.iface.Provider ----------------------------------------------------------------
    def get_model_prefix(self) -> str:
        return "libvirt_"

    def full_name(self) -> str:
        return SOURCE

    def get_provider_schema(self, diags: Diagnostics) -> Schema:
        return Schema(
            attributes=[
                Attribute(
                    "uri",
                    String(),
                    optional=True,
                    description=f"libvirt connection URI (default {DEFAULT_URI}).",
                ),
                Attribute(
                    "name_prefix",
                    String(),
                    optional=True,
                    description="If set, every object this provider creates or deletes must have a "
                    "name starting with it (halab sets `<lab>-`).",
                ),
            ]
        )

    def validate_config(self, diags: Diagnostics, config: Config) -> None:
        uri = (config or {}).get("uri")
        if isinstance(uri, str) and "://" not in uri:
            diags.add_error(
                f"uri {uri!r} is not a libvirt URI",
                "Expected e.g. qemu:///system or test:///default.",
                path=["uri"],
            )

    def configure_provider(self, diags: Diagnostics, config: Config) -> None:
        config = config or {}
        if isinstance(config.get("uri"), str):
            self.uri = config["uri"]
        if isinstance(config.get("name_prefix"), str):
            self.name_prefix = config["name_prefix"]
        try:
            self._conn = open_connection(self.uri)
        except libvirt.libvirtError as exc:
            diags.add_error(
                f"cannot connect to libvirt at {self.uri}: {exc.get_error_message() or exc}",
                "Is libvirtd running? On hosts without systemd start it with `libvirtd -d` "
                "(and `virtlogd -d`); `./lab.py doctor` checks this.",
            )

    def connection(self) -> libvirt.virConnect:
        if self._conn is None or not self._conn.isAlive():
            try:
                self._conn = open_connection(self.uri)
            except libvirt.libvirtError as exc:
                raise ProviderError(f"cannot connect to libvirt at {self.uri}: {exc}") from exc
        return self._conn

    def get_data_sources(self) -> list[type[DataSource]]:
        return []

    def get_resources(self) -> list[type[Resource]]:
        return [PoolResource, NetworkResource, VolumeResource, CloudinitDiskResource, DomainResource]

    def new_resource(self, klass: type[Resource]) -> Resource:
        return klass(self)  # type: ignore[call-arg]

    def new_data_source(self, klass: type[DataSource]) -> DataSource:
        return klass(self)  # type: ignore[call-arg]

    def get_functions(self) -> list[Any]:
        return []
