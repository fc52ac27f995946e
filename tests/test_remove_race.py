"""`aq rm NAME` racing `aq new NAME`: the removal never deletes the new VM's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from aq import paths, power, stopping, vm
from aq.errors import AqError


def test_new_between_remove_commit_and_delete_keeps_its_disk(base_image, monkeypatch) -> None:
    old = vm.create(vm.NewVm(name="twin"), base_image)
    made: list = []
    deleted: list[Path] = []
    real_delete = stopping._delete

    def new_then_delete(tomb: Path) -> None:
        # The interleaving: rm has committed; `aq new twin` runs before rm deletes files.
        made.append(vm.create(vm.NewVm(name="twin"), base_image))
        deleted.append(tomb)
        real_delete(tomb)

    monkeypatch.setattr(stopping, "_delete", new_then_delete)
    power.remove("twin")
    assert made and made[0].id != old.id
    assert Path(made[0].disk_path).exists()
    assert vm.get("twin").id == made[0].id
    assert deleted[0] != paths.vm_files("twin").root
    assert not deleted[0].exists()


def test_remove_leaves_no_tombstone(base_image) -> None:
    vm.create(vm.NewVm(name="gone"), base_image)
    power.remove("gone")
    assert sorted(p.name for p in paths.vms_dir().iterdir()) == []


def test_failed_create_after_commit_keeps_the_recorded_folder(base_image, monkeypatch) -> None:
    """create() cleans up only while it holds the write lock, never after its commit."""

    def broken_get(name: str):
        raise AqError("reading back failed")

    monkeypatch.setattr(vm, "get", broken_get)
    with pytest.raises(AqError):
        vm.create(vm.NewVm(name="kept"), base_image)
    assert paths.vm_files("kept").disk.exists()
