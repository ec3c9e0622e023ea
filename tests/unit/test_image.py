"""Base image recipe, cache layout and clean-up of unfinished builds. No mmdebstrap: the cache is
filled with tiny directories shaped like real images and like builds that were killed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from halab.lab import image


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HALAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_image(rhash: str, built_at: str = "2025-01-01T00:00:00Z") -> Path:
    d = image.images_dir() / rhash
    d.mkdir()
    for name in (image.DISK_NAME, image.KERNEL_NAME, image.INITRD_NAME):
        (d / name).write_bytes(b"x" * 10)
    (d / image.MANIFEST_NAME).write_text(json.dumps({"recipe_hash": rhash, "built_at": built_at}))
    return d


def fake_partial_build(rhash: str) -> Path:
    """What a build killed during mmdebstrap leaves: a temp dir with a half-made rootfs."""
    d = image.images_dir() / f"{image.TMP_PREFIX}{rhash}-4242-abcdef"
    (d / "rootfs" / "var" / "lib" / "dpkg").mkdir(parents=True)
    (d / "rootfs" / "etc").mkdir()
    (d / "rootfs" / "etc" / "hostname").write_text("debian\n")
    (d / "build.log").write_text("I: installing remaining packages inside the chroot...\n")
    return d


# ---- recipe ----------------------------------------------------------------------------------


def test_recipe_hash_is_stable_and_short():
    assert image.recipe_hash() == image.recipe_hash()
    assert len(image.recipe_hash()) == 16
    assert image.recipe_hash() == image.recipe_hash(image.recipe())


def test_recipe_hash_ignores_key_order_but_not_content():
    rec = image.recipe()
    reordered = dict(reversed(list(rec.items())))
    assert image.recipe_hash(reordered) == image.recipe_hash(rec)
    assert image.recipe_hash({**rec, "packages": [*rec["packages"], "vim"]}) != image.recipe_hash(rec)
    assert image.recipe_hash({**rec, "recipe_version": rec["recipe_version"] + 1}) != image.recipe_hash(rec)


def test_recipe_carries_every_role_and_boot_package():
    pkgs = image.packages()
    assert pkgs == sorted(set(pkgs))
    for needed in ("linux-image-cloud-amd64", "cloud-init", "openssh-server", "systemd-sysv", "ifupdown",
                   "mariadb-server", "galera-4", "mariadb-client", "rabbitmq-server", "haproxy",
                   "keepalived", "python3-pymysql", "python3-pika", "socat", "iproute2", "curl"):
        assert needed in pkgs
    # mariadb.socket: systemd listened on 3306 on every node (the ha HAProxy's Galera frontend)
    assert set(image.recipe()["disabled_services"]) == {"mariadb", "mariadb.socket", "rabbitmq-server",
                                                          "haproxy", "keepalived"}


def test_mirror_does_not_change_the_hash(monkeypatch):
    before = image.recipe_hash()
    monkeypatch.setenv(image.MIRROR_ENV, "http://127.0.0.1:3142/debian/")
    assert image.recipe_hash() == before
    assert image.mirror() == "http://127.0.0.1:3142/debian"


# ---- cache lookup ----------------------------------------------------------------------------


def test_find_image_empty_cache():
    assert image.find_image() is None
    assert image.list_images() == []


def test_find_image_hit(cache):
    d = fake_image(image.recipe_hash())
    img = image.find_image()
    assert img is not None
    assert img.path == d and img.recipe_hash == image.recipe_hash()
    assert img.disk == d / "disk.qcow2" and img.kernel == d / "vmlinuz" and img.initrd == d / "initrd.img"
    assert img.manifest["recipe_hash"] == image.recipe_hash()
    assert img.size_bytes == 30
    assert img.kernel_cmdline.startswith("root=/dev/vda rw console=ttyS0 net.ifnames=0 ds=nocloud")
    assert "quiet" in img.kernel_cmdline.split()
    assert d.parent == cache / "images"


@pytest.mark.parametrize("missing", ["disk.qcow2", "vmlinuz", "initrd.img", "manifest.json"])
def test_incomplete_image_is_not_an_image(missing):
    d = fake_image(image.recipe_hash())
    (d / missing).unlink()
    assert image.find_image() is None
    assert image.list_images() == []


def test_corrupt_manifest_is_not_an_image():
    d = fake_image(image.recipe_hash())
    (d / "manifest.json").write_text("{not json")
    assert image.find_image() is None


def test_list_images_newest_first_and_skips_partial_builds():
    fake_image("aaaaaaaaaaaaaaaa", "2025-01-01T00:00:00Z")
    fake_image("bbbbbbbbbbbbbbbb", "2025-06-01T00:00:00Z")
    fake_partial_build("cccccccccccccccc")
    assert [i.recipe_hash for i in image.list_images()] == ["bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa"]
    assert image.find_image("cccccccccccccccc") is None


def test_ensure_image_cache_hit_is_fast_and_builds_nothing(monkeypatch):
    fake_image(image.recipe_hash())

    def no_build(*_a, **_k):
        raise AssertionError("a cache hit must not build")

    monkeypatch.setattr(image, "_build_locked", no_build)
    t0 = time.monotonic()
    img = image.ensure_image()
    assert time.monotonic() - t0 < 2.0
    assert img.recipe_hash == image.recipe_hash()


# ---- partial builds --------------------------------------------------------------------------


def test_clean_partial_builds_removes_only_unfinished_dirs():
    good = fake_image(image.recipe_hash())
    partial = fake_partial_build(image.recipe_hash())
    old = image.images_dir() / f"{image.OLD_PREFIX}{image.recipe_hash()}-123456"
    old.mkdir()
    (old / "disk.qcow2").write_bytes(b"old")
    removed = image.clean_partial_builds()
    assert sorted(removed) == sorted([partial, old])
    assert not partial.exists() and not old.exists()
    assert good.exists() and image.find_image() is not None


def test_build_lock_is_exclusive():
    idir = image.images_dir()
    with image._build_lock(idir), pytest.raises(image.ImageError, match="another image build"), \
            image._build_lock(idir):
        pass
    with image._build_lock(idir):  # released
        pass


def test_second_build_waits_for_the_first_and_uses_its_image(monkeypatch):
    """Two `up`s at once: the second waits on the lock, then finds the image the first built."""
    import threading

    idir = image.images_dir()
    events: list[image.ImageEvent] = []
    result: list[image.BaseImage] = []
    monkeypatch.setattr(image, "_build_locked", lambda *_a: (_ for _ in ()).throw(AssertionError("built")))
    with image._build_lock(idir):
        t = threading.Thread(target=lambda: result.append(image.ensure_image(progress=events.append)))
        t.start()
        for _ in range(200):
            if events:
                break
            time.sleep(0.01)
        assert [e.phase for e in events] == ["wait"]
        fake_image(image.recipe_hash())  # the other build finishes
    t.join(10)
    assert result and result[0].recipe_hash == image.recipe_hash()


def test_failed_build_leaves_no_partial_dir(monkeypatch):
    """A build that fails after creating its temp dir removes it; a stale one from a killed build
    is removed first."""
    stale = fake_partial_build(image.recipe_hash())
    monkeypatch.setattr(image, "check_tools", lambda: None)
    monkeypatch.setattr(image, "check_mirror", lambda url=None: None)
    monkeypatch.setattr(image, "check_free_space", lambda path: None)

    def boom(self, _mirror):
        (self.rootfs / "etc").mkdir(parents=True)
        (self.rootfs / "etc" / "half").write_text("x")
        raise image.ImageBuildFailed("mmdebstrap failed (exit 1)")

    monkeypatch.setattr(image._Build, "mmdebstrap", boom)
    events: list[image.ImageEvent] = []
    with pytest.raises(image.ImageBuildFailed):
        image.ensure_image(progress=events.append)
    left = [p.name for p in image.images_dir().iterdir() if p.name != ".lock"]
    assert left == ["last-failed-build.log"] or left == []
    assert not stale.exists()
    assert [e.phase for e in events][:2] == ["check", "cleanup"]
    assert all(e.elapsed >= 0 for e in events)


# ---- pre-flight errors -----------------------------------------------------------------------


def test_missing_tools_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(image.ImageToolMissing, match="mmdebstrap"):
        image.check_tools()


def test_unreachable_mirror_is_reported():
    with pytest.raises(image.MirrorUnreachable, match=r"127\.0\.0\.1:9"):
        image.check_mirror("http://127.0.0.1:9/debian", timeout=2)


def test_disk_full_is_reported_before_building(tmp_path):
    with pytest.raises(image.DiskFull, match="GiB free"):
        image.check_free_space(tmp_path, need=1 << 60)


def test_errors_are_halab_errors():
    from halab.errors import HalabError

    for exc in (image.ImageToolMissing, image.MirrorUnreachable, image.DiskFull, image.ImageBuildFailed):
        assert issubclass(exc, HalabError)


# ---- stock cloud image -----------------------------------------------------------------------


def test_stock_image_description(tmp_path):
    disk = tmp_path / "debian-12-genericcloud-amd64.qcow2"
    disk.write_bytes(b"QFI\xfb")
    st = image.stock_image(disk)
    assert st.disk == disk.resolve() and st.boot == "bootloader"
    assert "mariadb-server" in st.packages_for("db") and "galera-4" in st.packages_for("db")
    assert "rabbitmq-server" in st.packages_for("mq")
    assert "python3-pika" in st.packages_for("api")
    assert "keepalived" in st.packages_for("haproxy")
    assert st.cloud_config_for("mq")["packages"] == st.packages_for("mq")
    assert image.image_for(str(disk)) == st
    with pytest.raises(image.ImageError, match="does not exist"):
        image.stock_image(tmp_path / "nope.qcow2")


def test_image_for_builtin_uses_the_cache():
    fake_image(image.recipe_hash())
    img = image.image_for("builtin")
    assert isinstance(img, image.BaseImage) and img.recipe_hash == image.recipe_hash()


# ---- boot cost (recipe 2) --------------------------------------------------------------------


def test_recipe_makes_boots_cheap_under_tcg():
    rec = image.recipe()
    assert rec["recipe_version"] >= 2
    cmdline = image.KERNEL_CMDLINE.split()
    assert {"quiet", "loglevel=3", "systemd.show_status=auto", "console=ttyS0", "root=/dev/vda"} <= set(
        cmdline)
    assert "MODULES=list" in rec["initramfs_conf"]
    assert {"virtio_pci", "virtio_blk", "virtio_net", "ext4"} <= set(rec["initrd_modules"])
    for mod in ("kvm", "kvm_amd", "kvm_intel", "powernow_k8"):
        assert f"blacklist {mod}\n" in rec["modprobe_conf"]
    masked = set(rec["masked_units"])
    assert "serial-getty@ttyS0.service" not in masked and "ssh.service" not in masked
    assert {"getty@tty1.service", "getty-static.service", "e2scrub_reap.service", "apt-daily.timer"} <= masked
    # every recipe input is hashed
    assert image.recipe_hash({**rec, "masked_units": []}) != image.recipe_hash(rec)
    assert image.recipe_hash({**rec, "kernel_cmdline": "x"}) != image.recipe_hash(rec)


def test_overlay_files_are_what_the_recipe_says(tmp_path):
    b = image._Build(None, tmp_path, "0" * 16)
    b.tmp.mkdir()
    overlay = b.write_overlay()
    assert (overlay / "etc/initramfs-tools/conf.d/halab.conf").read_text() == image.INITRAMFS_CONF
    modules = (overlay / "etc/initramfs-tools/modules").read_text().split("\n")
    assert modules[1:-1] == list(image.INITRD_MODULES)
    assert (overlay / "etc/modprobe.d/halab-tcg.conf").read_text() == image.MODPROBE_CONF
    assert (overlay / "etc/cloud/cloud.cfg.d/90-halab.cfg").read_text() == image.CLOUD_CFG
    assert all(p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644) for p in overlay.rglob("*"))
