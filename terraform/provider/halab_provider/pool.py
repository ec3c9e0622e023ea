"""libvirt_pool: a directory storage pool, built, started and (by default) autostarted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape

import libvirt
from tf.iface import CreateContext, DeleteContext, ImportContext, ReadContext, UpdateContext
from tf.schema import Attribute, Schema
from tf.types import Bool, String
from tf.utils import Diagnostics

from halab_provider.common import (
    POOL_LOCK,
    BaseResource,
    ProviderError,
    State,
    check_prefix,
    is_not_found,
    known,
    reported,
    xml_text,
)


def lookup_pool(conn: libvirt.virConnect, ident: str) -> libvirt.virStoragePool | None:
    """A pool by UUID or name, None if there is none."""
    for finder in (conn.storagePoolLookupByUUIDString, conn.storagePoolLookupByName):
        try:
            return finder(ident)
        except libvirt.libvirtError as exc:
            if not is_not_found(exc) and exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise
    return None


def pool_state(pool: libvirt.virStoragePool) -> dict[str, Any]:
    root = ET.fromstring(pool.XMLDesc(0))
    return {
        "id": pool.UUIDString(),
        "name": pool.name(),
        "path": xml_text(root, "target/path"),
        "autostart": bool(pool.autostart()),
    }


class PoolResource(BaseResource):
    @classmethod
    def get_name(cls) -> str:
        return "pool"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            description="A libvirt directory storage pool.",
            attributes=[
                Attribute("id", String(), computed=True, description="The pool's UUID."),
                Attribute("name", String(), required=True, requires_replace=True),
                Attribute(
                    "path",
                    String(),
                    required=True,
                    requires_replace=True,
                    description="Directory holding the pool's volumes (created if missing).",
                ),
                Attribute("autostart", Bool(), optional=True, computed=True, default=True),
            ],
        )

    def validate(self, diags: Diagnostics, type_name: str, config: dict[str, Any]) -> None:
        super().validate(diags, type_name, config)
        path = config.get("path")
        if isinstance(path, str) and not path.startswith("/"):
            diags.add_error(f"path {path!r} must be absolute", path=["path"])

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        planned = known(planned)
        name = planned["name"]
        with reported(ctx.diagnostics, f"cannot create storage pool {name!r}"):
            check_prefix(self.provider, "storage pool", name)
            existing = lookup_pool(self.conn, name)
            if (
                existing is not None
                and self.provider.name_prefix
                and pool_state(existing)["path"] == planned["path"]
            ):
                ctx.diagnostics.add_warning(
                    f"storage pool {name!r} existed (left by an interrupted run); adopted it"
                )
                if not existing.isActive():
                    existing.create(0)
                existing.setAutostart(1 if planned.get("autostart") in (None, True) else 0)
                return pool_state(existing)
            if existing is not None:
                raise ProviderError(
                    f"storage pool {name!r} exists and is not this lab's (another path); halab will not "
                    "touch it",
                    f"Rename or remove it (virsh pool-destroy {name}; virsh pool-undefine {name}).",
                )
            xml = (
                f"<pool type='dir'><name>{escape(name)}</name>"
                f"<target><path>{escape(planned['path'])}</path></target></pool>"
            )
            pool = self.conn.storagePoolDefineXML(xml, 0)
            try:
                pool.build(0)
                pool.create(0)
                pool.setAutostart(1 if planned.get("autostart") in (None, True) else 0)
            except libvirt.libvirtError:
                pool.undefine()
                raise
            return pool_state(pool)
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        with reported(ctx.diagnostics, f"cannot read storage pool {current.get('name')!r}"):
            pool = lookup_pool(self.conn, current.get("id") or current["name"])
            return None if pool is None else pool_state(pool)
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        planned = known(planned)
        with reported(ctx.diagnostics, f"cannot update storage pool {current['name']!r}"):
            pool = lookup_pool(self.conn, current["id"])
            if pool is None:
                raise ProviderError(f"storage pool {current['name']!r} disappeared during apply")
            if not pool.isActive():
                pool.create(0)
            pool.setAutostart(1 if planned.get("autostart") in (None, True) else 0)
            return pool_state(pool)
        return current

    def delete(self, ctx: DeleteContext, current: State) -> None:
        name = current["name"]
        with POOL_LOCK, reported(ctx.diagnostics, f"cannot delete storage pool {name!r}"):
            check_prefix(self.provider, "storage pool", name)
            pool = lookup_pool(self.conn, current["id"]) if current.get("id") else None
            if pool is None:
                return None  # already gone: deleting is idempotent
            if pool.isActive():
                pool.refresh(0)
                left = pool.listVolumes()
                if left:
                    raise ProviderError(
                        f"storage pool {name!r} still holds volumes: {', '.join(sorted(left))}",
                        "halab deletes only empty pools; remove these volumes (or their Terraform "
                        "resources) first.",
                    )
                pool.destroy()
            try:
                pool.delete(0)  # removes the (empty) directory
            except libvirt.libvirtError as exc:
                ctx.diagnostics.add_warning(
                    f"storage pool {name!r}: directory {current.get('path')} was not removed",
                    str(exc.get_error_message() or exc),
                )
            pool.undefine()
        return None

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        with reported(ctx.diagnostics, f"cannot import storage pool {id!r}"):
            pool = lookup_pool(self.conn, id)
            if pool is None:
                raise ProviderError(f"no storage pool named {id!r}")
            return pool_state(pool)
        return None
