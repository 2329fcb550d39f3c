"""Run-folder I/O (issue 26): a full disk is one line, checkpoints carry a checksum, stale files are cleaned."""

import errno
import zipfile
from pathlib import Path

import pytest
import torch

from leannet.cli import main as leannet_main
from leannet.errors import LeannetError
from leannet.runio import atomic_torch_save, safe_torch_load

TINY = ["data.name=digits", "data.val_size=100", "data.few_shot=10", "data.batch_size=50", "model.name=mlp",
        "trainer.threads=1", "trainer.progress=none"]


def test_disk_full_while_writing_a_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # the second epoch's checkpoints find the disk full
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    code = leannet_main(["train", "fashion_mnist", *TINY, "trainer.max_epochs=2", f"out_dir={tmp_path}", "name=full"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    checkpoints = tmp_path / "full" / "checkpoints"
    assert f"cannot write checkpoint {checkpoints}/" in err and "no space left on the device" in err
    assert " free on " in err and "the previous checkpoint is intact" in err
    assert f"`leannet train --resume {tmp_path / 'full'}`" in err
    assert safe_torch_load(checkpoints / "last.ckpt")["epoch"] == 0
    assert not list(checkpoints.glob(".*.tmp"))


def test_resume_removes_orphaned_temporary_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    assert leannet_main(["train", "fashion_mnist", *TINY, "trainer.max_epochs=1", f"out_dir={tmp_path}",
                         "name=run"]) == 0
    orphan = run_dir / "checkpoints" / ".last.ckpt.k2j4h1x9.tmp"  # a writer killed mid-write leaves one
    orphan.write_bytes(b"partial")
    keep = run_dir / "checkpoints" / "notes.tmp"
    keep.write_text("not ours")
    assert leannet_main(["train", "--resume", str(run_dir), "trainer.max_epochs=2"]) == 0
    assert not orphan.exists() and keep.exists()


def _flip_a_bit_in_tensor_data(path: Path) -> None:
    """Flip one bit in the middle of the largest tensor's bytes inside a torch zip checkpoint."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_a_flipped_bit_in_tensor_data_is_detected(tmp_path):
    path = tmp_path / "w.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.randn(64, 64), "b": torch.zeros(64)}, "epoch": 3}, path)
    assert safe_torch_load(path)["epoch"] == 3
    _flip_a_bit_in_tensor_data(path)
    with pytest.raises(LeannetError, match=f"checkpoint {path} is corrupt: its tensors do not match the checksum"):
        safe_torch_load(path)


def test_a_corrupt_run_checkpoint_is_named_by_eval(tmp_path, capsys):
    assert leannet_main(["train", "fashion_mnist", *TINY, "trainer.max_epochs=1", f"out_dir={tmp_path}",
                         "name=run"]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    _flip_a_bit_in_tensor_data(last)
    capsys.readouterr()
    assert leannet_main(["eval", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {last} is corrupt" in err, err


def test_a_checkpoint_without_checksum_still_loads_and_says_so(tmp_path, capsys):
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)  # as leannet wrote them before
    loaded = safe_torch_load(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    assert f"{path} has no checksum" in capsys.readouterr().err


def test_a_really_full_disk_is_one_line(tmp_path, capsys):
    """torch's zip writer reports ENOSPC as a RuntimeError: a 300 KiB tmpfs cannot hold the first checkpoint."""
    from tests.test_bad_input import mount_tmpfs

    full = tmp_path / "full"
    if not mount_tmpfs(full, "size=300k"):
        pytest.skip("needs a small tmpfs: mounting one needs root")
    try:
        code = leannet_main(["train", "fashion_mnist", *TINY, "trainer.max_epochs=1", f"out_dir={full}", "name=r"])
        err = capsys.readouterr().err
    finally:
        import subprocess

        subprocess.run(["umount", str(full)], check=False)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot write checkpoint {full}/r/checkpoints/" in err and " free on " in err, err
    assert "; free space, then start the run again" in err
