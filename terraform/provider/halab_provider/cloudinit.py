"""libvirt_cloudinit_disk: a NoCloud seed (ISO9660, label `cidata`) uploaded as a pool volume."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any
from xml.sax.saxutils import escape

import pycdlib
from tf.iface import CreateContext, DeleteContext, ImportContext, ReadContext, UpdateContext
from tf.schema import Attribute, Schema
from tf.types import String

from halab_provider.common import POOL_LOCK, BaseResource, ProviderError, State, check_prefix, known, reported
from halab_provider.volume import lookup_volume, pool_for_new_volume, upload_file

SEED_FILES = (("user_data", "user-data"), ("meta_data", "meta-data"), ("network_config", "network-config"))


def build_seed_iso(user_data: str | None, meta_data: str | None, network_config: str | None) -> bytes:
    """The NoCloud seed: ISO9660 with Joliet and Rock Ridge names, volume label `cidata`."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    values = {"user_data": user_data, "meta_data": meta_data, "network_config": network_config}
    for i, (attr, fname) in enumerate(SEED_FILES):
        text = values[attr]
        if text is None and attr == "network_config":
            continue
        data = (text or "").encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/SEED{i}.;1", rr_name=fname, joliet_path=f"/{fname}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def read_seed_iso(path: str) -> dict[str, str | None]:
    """The seed files of an existing ISO (for import), by attribute name."""
    iso = pycdlib.PyCdlib()
    iso.open(path)
    found: dict[str, str | None] = {}
    try:
        for attr, fname in SEED_FILES:
            buf = io.BytesIO()
            try:
                iso.get_file_from_iso_fp(buf, rr_path=f"/{fname}")
                found[attr] = buf.getvalue().decode()
            except pycdlib.pycdlibexception.PyCdlibInvalidInput:
                found[attr] = None
    finally:
        iso.close()
    return found


class CloudinitDiskResource(BaseResource):
    @classmethod
    def get_name(cls) -> str:
        return "cloudinit_disk"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            description="A cloud-init NoCloud seed ISO (label `cidata`) stored as a raw volume in a pool; "
            "attach it to a domain as a virtio disk.",
            attributes=[
                Attribute("id", String(), computed=True, description="The volume's key (its path)."),
                Attribute("name", String(), required=True, requires_replace=True),
                Attribute("pool", String(), required=True, requires_replace=True),
                Attribute("user_data", String(), optional=True, requires_replace=True),
                Attribute("meta_data", String(), optional=True, requires_replace=True),
                Attribute("network_config", String(), optional=True, requires_replace=True),
                Attribute("path", String(), computed=True),
            ],
        )

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        planned = known(planned)
        name, pool_name = planned["name"], planned["pool"]
        with POOL_LOCK, reported(ctx.diagnostics, f"cannot create cloud-init disk {name!r}"):
            pool = pool_for_new_volume(self.provider, self.conn, ctx.diagnostics, pool_name, name)
            data = build_seed_iso(
                planned.get("user_data"), planned.get("meta_data"), planned.get("network_config")
            )
            xml = (
                f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{len(data)}</capacity>"
                "<target><format type='raw'/></target></volume>"
            )
            vol = pool.createXML(xml, 0)
            try:
                with tempfile.NamedTemporaryFile(prefix="halab-seed-", suffix=".iso") as tmp:
                    tmp.write(data)
                    tmp.flush()
                    upload_file(self.conn, vol, tmp.name)
            except BaseException:
                vol.delete(0)
                raise
            return self._state(vol, planned)
        return None

    @staticmethod
    def _state(vol: Any, prior: State) -> dict[str, Any]:
        return {
            "id": vol.key(),
            "name": vol.name(),
            "pool": vol.storagePoolLookupByVolume().name(),
            "user_data": prior.get("user_data"),
            "meta_data": prior.get("meta_data"),
            "network_config": prior.get("network_config"),
            "path": vol.path(),
        }

    def read(self, ctx: ReadContext, current: State) -> State | None:
        with reported(ctx.diagnostics, f"cannot read cloud-init disk {current.get('name')!r}"):
            vol = lookup_volume(self.conn, current.get("id") or f"{current['pool']}/{current['name']}")
            return None if vol is None else self._state(vol, current)
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        planned = known(planned)
        return {**planned, "id": current["id"], "path": current["path"]}

    def delete(self, ctx: DeleteContext, current: State) -> None:
        name = current["name"]
        with POOL_LOCK, reported(ctx.diagnostics, f"cannot delete cloud-init disk {name!r}"):
            check_prefix(self.provider, "volume", name)
            vol = lookup_volume(self.conn, current["id"]) if current.get("id") else None
            if vol is None or vol.name() != name:
                return None
            vol.delete(0)
        return None

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        with reported(ctx.diagnostics, f"cannot import cloud-init disk {id!r}"):
            vol = lookup_volume(self.conn, id)
            if vol is None:
                raise ProviderError(f"no volume {id!r}", "Use the volume's path or key, or <pool>/<name>.")
            prior: State = {}
            if os.access(vol.path(), os.R_OK):
                try:
                    prior = dict(read_seed_iso(vol.path()))
                except Exception as exc:  # not an ISO we can read: import without contents
                    ctx.diagnostics.add_warning(f"could not read the seed in {vol.path()}: {exc}")
            return self._state(vol, prior)
        return None
