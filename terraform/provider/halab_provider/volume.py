"""libvirt_volume: a volume imported from a local file, or a qcow2 overlay on a base volume."""

from __future__ import annotations

import contextlib
import os
import struct
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape

import libvirt
from tf.iface import CreateContext, DeleteContext, ImportContext, ReadContext, UpdateContext
from tf.schema import Attribute, Schema
from tf.types import Number, String
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
from halab_provider.pool import lookup_pool

FORMATS = ("qcow2", "raw")
CHUNK = 4 * 1024 * 1024


def lookup_volume(conn: libvirt.virConnect, ident: str) -> libvirt.virStorageVol | None:
    """A volume by key, by path, or by `pool/name`; None if there is none."""
    finders = [conn.storageVolLookupByKey, conn.storageVolLookupByPath]
    for finder in finders:
        try:
            return finder(ident)
        except libvirt.libvirtError as exc:
            if not is_not_found(exc) and exc.get_error_code() not in (
                libvirt.VIR_ERR_INVALID_ARG,
                libvirt.VIR_ERR_INVALID_STORAGE_VOL,
            ):
                raise
    if "/" in ident and not ident.startswith("/"):
        pool_name, _, vol_name = ident.partition("/")
        pool = lookup_pool(conn, pool_name)
        if pool is not None:
            try:
                return pool.storageVolLookupByName(vol_name)
            except libvirt.libvirtError as exc:
                if not is_not_found(exc):
                    raise
    return None


def volume_format(vol: libvirt.virStorageVol) -> str:
    root = ET.fromstring(vol.XMLDesc(0))
    el = root.find("target/format")
    # After a pool refresh libvirt reports probed formats (e.g. "iso" for a seed); QEMU reads every
    # non-qcow2 volume halab makes as raw.
    return "qcow2" if el is not None and el.get("type") == "qcow2" else "raw"


def qcow2_virtual_size(path: str) -> int | None:
    """The virtual size from a qcow2 header, None if the file is not qcow2."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    if len(head) < 32 or head[:4] != b"QFI\xfb":
        return None
    return struct.unpack(">Q", head[24:32])[0]


def upload_file(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str) -> bool:
    """Stream a local file into a volume. Returns False on drivers without storage (test driver)."""
    size = os.path.getsize(path)
    stream = conn.newStream(0)
    try:
        vol.upload(stream, 0, size, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT and conn.getType().upper() == "TEST":
            return False  # libvirt's test driver has no real storage: the volume exists, empty
        raise
    try:
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    sent = stream.send(view.tobytes())
                    if sent < 0:
                        raise ProviderError(f"upload of {path} into {vol.name()} failed")
                    view = view[sent:]
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return True


def pool_for_new_volume(provider: Any, conn: libvirt.virConnect, diags: Diagnostics, pool_name: str,
                        name: str) -> libvirt.virStoragePool:
    """The pool a new volume goes into, with ``name`` free in it. Inside the lab's prefix a
    same-named volume is a leftover of an interrupted run: its content is derived from the
    configuration, so it is removed (with a warning) and made again. Outside the prefix: an error."""
    check_prefix(provider, "volume", name)
    pool = lookup_pool(conn, pool_name)
    if pool is None:
        raise ProviderError(f"storage pool {pool_name!r} does not exist")
    pool.refresh(0)
    if name in pool.listVolumes():
        if not provider.name_prefix:
            raise ProviderError(
                f"volume {name!r} already exists in pool {pool_name!r}",
                f"halab will not touch it: rename or remove it (virsh vol-delete {name} --pool {pool_name}).",
            )
        diags.add_warning(f"volume {name!r} existed (left by an interrupted run); recreated it")
        pool.storageVolLookupByName(name).delete(0)
    return pool


class VolumeResource(BaseResource):
    @classmethod
    def get_name(cls) -> str:
        return "volume"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            description="A storage volume: imported from a local file (`source`), a qcow2 overlay on a "
            "base volume (`base_volume_id`/`base_volume_name`), or empty (`size`).",
            attributes=[
                Attribute(
                    "id", String(), computed=True, description="The volume's key (its path in a dir pool)."
                ),
                Attribute("name", String(), required=True, requires_replace=True),
                Attribute("pool", String(), required=True, requires_replace=True, description="Pool name."),
                Attribute(
                    "format",
                    String(),
                    optional=True,
                    computed=True,
                    default="qcow2",
                    requires_replace=True,
                    description="`qcow2` or `raw`.",
                ),
                Attribute(
                    "source",
                    String(),
                    optional=True,
                    requires_replace=True,
                    description="Local file uploaded into the volume (base image, kernel, initrd).",
                ),
                Attribute(
                    "base_volume_id",
                    String(),
                    optional=True,
                    requires_replace=True,
                    description="Key of the volume this qcow2 overlay is backed by.",
                ),
                Attribute(
                    "base_volume_name",
                    String(),
                    optional=True,
                    requires_replace=True,
                    description="Name of the backing volume (in `base_volume_pool` or `pool`).",
                ),
                Attribute("base_volume_pool", String(), optional=True, requires_replace=True),
                Attribute(
                    "size",
                    Number(),
                    optional=True,
                    computed=True,
                    requires_replace=True,
                    description="Capacity in bytes (default: the source's or the base's size).",
                ),
                Attribute("path", String(), computed=True),
            ],
        )

    def validate(self, diags: Diagnostics, type_name: str, config: dict[str, Any]) -> None:
        super().validate(diags, type_name, config)
        fmt = config.get("format")
        if isinstance(fmt, str) and fmt not in FORMATS:
            diags.add_error(f"format must be one of {', '.join(FORMATS)} (got {fmt!r})", path=["format"])
        sources = [k for k in ("source", "base_volume_id", "base_volume_name") if config.get(k) is not None]
        if len(sources) > 1:
            diags.add_error(
                f"set only one of source, base_volume_id, base_volume_name (got {', '.join(sources)})"
            )
        if config.get("base_volume_pool") is not None and config.get("base_volume_name") is None:
            diags.add_error("base_volume_pool needs base_volume_name", path=["base_volume_pool"])

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        planned = known(planned)
        name, pool_name = planned["name"], planned["pool"]
        fmt = planned.get("format") or "qcow2"
        with POOL_LOCK, reported(ctx.diagnostics, f"cannot create volume {name!r} in pool {pool_name!r}"):
            pool = pool_for_new_volume(self.provider, self.conn, ctx.diagnostics, pool_name, name)
            size = planned.get("size")
            size = int(size) if isinstance(size, int | float) else None
            backing = ""
            source = planned.get("source")
            if source:
                if not os.path.isfile(source):
                    raise ProviderError(
                        f"source file {source} does not exist",
                        "Build the base image first (./lab.py image build).",
                    )
                file_size = os.path.getsize(source)
                virtual = qcow2_virtual_size(source) if fmt == "qcow2" else None
                size = max(size or 0, file_size, virtual or 0)
            base_ident = planned.get("base_volume_id")
            if planned.get("base_volume_name"):
                base_ident = f"{planned.get('base_volume_pool') or pool_name}/{planned['base_volume_name']}"
            if base_ident:
                base = lookup_volume(self.conn, base_ident)
                if base is None:
                    raise ProviderError(f"base volume {base_ident!r} does not exist")
                if fmt != "qcow2":
                    raise ProviderError("a volume with a base volume must have format qcow2")
                base_info = base.info()  # [type, capacity, allocation]
                size = max(size or 0, int(base_info[1]))
                backing = (
                    f"<backingStore><path>{escape(base.path())}</path>"
                    f"<format type='{volume_format(base)}'/></backingStore>"
                )
            if not size:
                raise ProviderError("size is required for an empty volume (no source, no base volume)")
            xml = (
                f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
                f"<target><format type='{fmt}'/></target>{backing}</volume>"
            )
            vol = pool.createXML(xml, 0)
            if source:
                try:
                    upload_file(self.conn, vol, source)
                except BaseException:
                    vol.delete(0)
                    raise
                pool.refresh(0)  # let libvirt re-read the uploaded file (qcow2 header, sizes)
                vol = pool.storageVolLookupByName(name)
            return self._state(vol, planned)
        return None

    def _state(self, vol: libvirt.virStorageVol, prior: State) -> dict[str, Any]:
        root = ET.fromstring(vol.XMLDesc(0))
        backing_path = xml_text(root, "backingStore/path")
        state = {
            "id": vol.key(),
            "name": vol.name(),
            "pool": vol.storagePoolLookupByVolume().name(),
            "format": volume_format(vol),
            "source": prior.get("source"),
            "base_volume_id": prior.get("base_volume_id"),
            "base_volume_name": prior.get("base_volume_name"),
            "base_volume_pool": prior.get("base_volume_pool"),
            "size": int(vol.info()[1]),
            "path": vol.path(),
        }
        if backing_path and not (state["base_volume_id"] or state["base_volume_name"]):
            state["base_volume_id"] = backing_path  # imported overlay: key == path in a dir pool
        return state

    def read(self, ctx: ReadContext, current: State) -> State | None:
        with reported(ctx.diagnostics, f"cannot read volume {current.get('name')!r}"):
            ident = current.get("id") or f"{current['pool']}/{current['name']}"
            vol = lookup_volume(self.conn, ident)
            return None if vol is None else self._state(vol, current)
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        planned = known(planned)
        # Every attribute that matters forces replacement; nothing to change in place.
        return {**planned, "id": current["id"], "path": current["path"], "size": current["size"]}

    def delete(self, ctx: DeleteContext, current: State) -> None:
        name = current["name"]
        with POOL_LOCK, reported(ctx.diagnostics, f"cannot delete volume {name!r}"):
            check_prefix(self.provider, "volume", name)
            vol = lookup_volume(self.conn, current["id"]) if current.get("id") else None
            if vol is None or vol.name() != name:
                return None  # already gone
            vol.delete(0)
        return None

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        with reported(ctx.diagnostics, f"cannot import volume {id!r}"):
            vol = lookup_volume(self.conn, id)
            if vol is None:
                raise ProviderError(f"no volume {id!r}", "Use the volume's path or key, or <pool>/<name>.")
            return self._state(vol, {})
        return None
