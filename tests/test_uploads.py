"""Uploaded files: zips refused before anything is written (bombs, image bombs, collisions, long names,
encryption), refused and abandoned uploads removed (only what ordercomp wrote), state dicts
checked against the architecture."""
from __future__ import annotations

import io
import os
import time
import zipfile

import pytest
import torch
from PIL import Image
from untrusted_data import EPS_AS_PNG, image_bomb_zip

from ordercomp import uploads
from ordercomp.models.checkpoints import CheckpointError
from ordercomp.data.datasets import DataError
from ordercomp.models.zoo import create_model
from testkit import png, zip_of
from untrusted_files import NOTES, many_members


def everything_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def test_a_zip_bomb_just_under_the_size_limit_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "ZIP_MAX_BYTES", 8 << 20)  # scaled down: 1 GiB of zeros would take minutes to pack
    bomb = zip_of({"cat/1.png": png(), "dog/zeros.png": bytes((8 << 20) - 4096)})
    assert len(bomb) < (8 << 20) // 500
    with pytest.raises(DataError, match=r"unpacks to \d+ times its size \(the limit is 100:1\): nothing was extracted"):
        uploads.extract_image_zip(bomb, tmp_path / "datasets")
    assert everything_under(tmp_path) == []


def test_one_bomb_member_among_plain_images_is_refused(tmp_path):
    images = {f"cat/{index}.png": os.urandom(20_000) for index in range(200)}  # random bytes do not compress
    bomb = zip_of(images | {"dog/zeros.png": bytes(3 << 20)})
    with pytest.raises(DataError, match=r"^dog/zeros.png unpacks to \d+ times its packed size \(the limit is 100:1\)"):
        uploads.extract_image_zip(bomb, tmp_path / "datasets")
    assert everything_under(tmp_path) == []


def encrypted_zip() -> bytes:
    """A zip whose member says it is encrypted (bit 0 of its flags, in the local and central headers)."""
    data = bytearray(zip_of({"cat/1.png": png(), "dog/1.png": png()}))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.index(signature) + offset] |= 0x1
    return bytes(data)


@pytest.mark.parametrize("make, message", [
    (lambda: zip_with_duplicate(), "holds 'cat/1.png' twice"),
    (lambda: zip_of({"cat": png(), "cat/1.png": png(), "dog/1.png": png()}), "holds 'cat' both as a file and as a folder"),
    (lambda: zip_of({"cat/" + "a" * 300 + ".png": png(), "dog/1.png": png()}), "a name longer than a file system allows"),
    (encrypted_zip, "holds an encrypted file 'cat/1.png'"),
])
def test_zip_entries_that_cannot_be_unpacked_are_one_line(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        uploads.extract_image_zip(make(), tmp_path / "datasets")
    assert everything_under(tmp_path) == []


def zip_with_duplicate() -> bytes:
    buffer = io.BytesIO()
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(buffer, "w") as archive:
        for name in ("cat/1.png", "cat/1.png", "dog/1.png"):
            archive.writestr(name, png())
    return buffer.getvalue()


def test_the_same_zip_uploaded_twice_at_once_keeps_one_tree_for_both(tmp_path, monkeypatch):
    # before: the upload that finished second could not move its tree onto the first's, took that for a refusal and
    # removed the first's tree, which a job may have been reading
    folder, data = tmp_path / "datasets", zip_of({"pets/cat/1.png": png(), "pets/dog/1.png": png()})
    extract, roots = uploads._extract_member, []

    def meanwhile(archive, member, temp):  # the other upload of the same bytes finishes while this one unpacks
        monkeypatch.setattr(uploads, "_extract_member", extract)
        if not roots:
            roots.append(uploads.extract_image_zip(data, folder))
        extract(archive, member, temp)

    monkeypatch.setattr(uploads, "_extract_member", meanwhile)
    assert uploads.extract_image_zip(data, folder) == roots[0]
    assert sorted(p.name for p in os.scandir(roots[0])) == ["cat", "dog"]
    assert [p.name for p in folder.iterdir() if p.name.startswith(".unzip-")] == []


def test_a_zip_that_is_no_image_folder_is_removed_again(tmp_path):
    folder = tmp_path / "datasets"
    with pytest.raises(DataError, match="is not an ImageFolder tree"):
        uploads.extract_image_zip(zip_of({"only/1.png": png()}), folder)
    assert everything_under(folder) == []
    root = uploads.extract_image_zip(zip_of({"pets/cat/1.png": png(), "pets/dog/1.png": png()}), folder)
    assert sorted(p.name for p in os.scandir(root)) == ["cat", "dog"]


def test_an_unreadable_checkpoint_upload_is_removed_but_nothing_else(tmp_path):
    folder = tmp_path / "uploads"
    theirs = folder / "notes" / "keep.txt"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("not ordercomp's")
    with pytest.raises(CheckpointError, match="broken.pt is not a readable torch checkpoint"):
        uploads.keep_checkpoint(folder, "broken.pt", b"not a checkpoint")
    assert everything_under(folder) == ["notes", "notes/keep.txt"]
    assert not uploads.discard_upload(theirs) and theirs.exists()


def test_a_text_file_uploaded_as_a_state_dict_is_one_line_and_removed(tmp_path):
    """The weights-only unpickler raises KeyError on this text; it used to reach the page, the file left behind."""
    folder = tmp_path / "uploads"
    with pytest.raises(CheckpointError, match=r"^notes.pt is not a readable torch checkpoint \(KeyError\)"):
        uploads.keep_checkpoint(folder, "notes.pt", NOTES)
    assert everything_under(folder) == []


def test_abandoned_uploads_are_swept_but_used_recent_and_foreign_ones_stay(tmp_path):
    folder = tmp_path / "uploads"
    old, used, recent = (uploads.save_upload(folder, f"{name}.pt", name.encode()) for name in ("old", "used", "recent"))
    foreign = folder / "0123456789abcdef"
    foreign.mkdir()
    (foreign / "mine.pt").write_text("the user's own")
    week_ago = time.time() - uploads.ABANDONED_AFTER_S - 60
    for path in (old, used, foreign / "mine.pt"):
        os.utime(path.parent / uploads.MARKER if path.parent != foreign else path, (week_ago, week_ago))
    assert uploads.sweep_abandoned(folder, {str(used)}) == [old.parent]
    assert not old.exists() and used.exists() and recent.exists() and (foreign / "mine.pt").exists()


def tiny_state(path, architecture="cnn_tiny", classes=10, channels=1):
    torch.save(create_model(architecture, classes, channels).state_dict(), path)
    return path


def test_a_state_dict_is_checked_against_the_architecture_at_upload(tmp_path):
    path = tiny_state(tmp_path / "tiny.pt")
    assert uploads.check_checkpoint(path, "cnn_tiny").startswith("tiny.pt: a state dict of")
    assert uploads.check_checkpoint(tiny_state(tmp_path / "rgb.pt", classes=3, channels=3), "cnn_tiny")
    with pytest.raises(CheckpointError, match=r"^tiny.pt does not fit resnet_mini: \d+ missing keys \(.+\); \d+ unexpected keys \(.+\)"):
        uploads.check_checkpoint(path, "resnet_mini")
    state = torch.load(path, weights_only=True)
    name = next(key for key, tensor in state.items() if tensor.dim() == 4)
    state[name] = torch.zeros(3, *state[name].shape[1:])
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match=rf"1 shape mismatches \({name} is \(3, .*\), needs \(\d+, .*\)\); choose the architecture"):
        uploads.check_checkpoint(tmp_path / "cut.pt", "cnn_tiny")


def test_a_training_frameworks_checkpoint_passes_the_upload_check_as_it_loads(tmp_path):
    state = create_model("cnn_tiny", 10, 1).state_dict()
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}, tmp_path / "lightning.ckpt")
    assert uploads.check_checkpoint(tmp_path / "lightning.ckpt", "cnn_tiny").startswith("lightning.ckpt: a state dict of")


def test_timms_pth_tar_checkpoint_can_be_uploaded(tmp_path):
    """Stop 44: timm's train.py saves last.pth.tar; the uploader refused its ending ('.tar')."""
    assert "pth.tar" in uploads.checkpoint_types()
    kept = uploads.keep_checkpoint(tmp_path, "last.pth.tar", tiny_state(tmp_path / "w.pt").read_bytes())
    assert uploads.check_checkpoint(kept, "cnn_tiny").startswith("last.pth.tar: a state dict of")


def test_the_upload_check_reads_the_ema_weights_when_they_are_chosen_and_refuses_a_file_without_them(tmp_path):
    state = create_model("cnn_tiny", 10, 1).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()} | {f"model_ema.module.{k}": v for k, v in state.items()}},
               tmp_path / "ema.ckpt")
    assert uploads.check_checkpoint(tmp_path / "ema.ckpt", "cnn_tiny", ema=True).endswith("for cnn_tiny, its EMA weights read")
    torch.save({"state_dict": {f"model_ema.module.{k}": v for k, v in list(state.items())[1:]}}, tmp_path / "cut.ckpt")
    with pytest.raises(CheckpointError, match=r"^cut.ckpt does not fit cnn_tiny: 1 missing keys"):
        uploads.check_checkpoint(tmp_path / "cut.ckpt", "cnn_tiny", ema=True)
    with pytest.raises(CheckpointError, match=r"^tiny.pt holds no EMA weights \(a state dict of \d+ tensors\): read its weights without"):
        uploads.check_checkpoint(tiny_state(tmp_path / "tiny.pt"), "cnn_tiny", ema=True)


def test_a_registered_factorys_weights_are_read_without_the_model_their_ema_weights_in_every_layout(tmp_path):
    state = create_model("cnn_tiny", 10, 1).state_dict()
    torch.save({"state_dict": state, "state_dict_ema": state}, tmp_path / "timm.pth.tar")  # an entry of their own
    torch.save({"state_dict": {f"ema_model.{k}": v for k, v in state.items()}}, tmp_path / "prefix.ckpt")  # under a prefix
    for name in ("timm.pth.tar", "prefix.ckpt"):
        assert uploads.check_weights(tmp_path / name, ema=True).endswith("values), its EMA weights read")
    assert uploads.check_weights(tmp_path / "timm.pth.tar") == (f"timm.pth.tar: a state dict of {len(state)} tensors "
                                                                 f"({sum(t.numel() for t in state.values()):,} values)")
    with pytest.raises(CheckpointError, match=r"^tiny.pt holds no EMA weights \(a state dict of \d+ tensors\)"):
        uploads.check_weights(tiny_state(tmp_path / "tiny.pt"), ema=True)


def test_torchscript_is_kept_but_not_loaded_without_trust(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERCOMP_TORCHSCRIPT", "allow")  # the server's operator allows TorchScript; each upload still needs trust
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(create_model("cnn_tiny", 10, 1)), scripted)
    path = uploads.keep_checkpoint(tmp_path / "uploads", "model.pt", scripted.getvalue())  # the user may still tick the box
    with pytest.raises(CheckpointError, match="model.pt is TorchScript: loading it runs code stored in the file, so nothing from it was run"):
        uploads.check_checkpoint(path, None)
    assert "TorchScript model (its code runs: you trust it)" in uploads.check_checkpoint(path, None, trust_torchscript=True)


def test_a_zipped_image_bomb_under_the_ratio_limit_is_refused_before_anything_is_written(tmp_path):
    """Issue 19: a 36-megapixel PNG of 105 kB zips to 2.5 kB, below the 1 MB from which the 100:1 ratio
    applies, and decoded to hundreds of MB when the tree was loaded."""
    bomb = image_bomb_zip()
    assert len(bomb) < 4096
    with pytest.raises(DataError, match=r"^image cat/bomb.png is 6000x6000 pixels in 105,048 bytes \(342 pixels per byte") as error:
        uploads.extract_image_zip(bomb, tmp_path / "datasets")
    assert "\n" not in str(error.value) and everything_under(tmp_path) == []


def test_an_unreadable_image_in_a_zip_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(DataError, match=r"^cannot read image cat/drawing.png: cannot identify image file"):
        uploads.extract_image_zip(zip_of({"cat/drawing.png": EPS_AS_PNG, "dog/1.png": png()}), tmp_path / "datasets")
    assert everything_under(tmp_path) == []


def test_a_zip_of_too_many_entries_is_refused_before_zipfile_reads_them(tmp_path, monkeypatch):
    """zipfile builds an object per central directory entry before any check: 2M empty entries in 98 MB
    took 1.7 GB. The entries are counted first, so zipfile never sees such an upload."""
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda self: opened.append(self))
    with pytest.raises(DataError, match=r"^the upload holds more than 100,000 members: zip the dataset folder") as refused:
        uploads.extract_image_zip(many_members(uploads.ZIP_MAX_FILES + 1), tmp_path / "uploads")
    assert "\n" not in str(refused.value) and opened == [] and not (tmp_path / "uploads").exists()


def test_the_upload_check_allocates_nothing_for_the_classes_and_channels_a_file_declares(tmp_path):
    # a stride-0 view costs 4 bytes in the file but declares 2**40 classes and 2**30 input channels: building the
    # architecture at that size would take terabytes (torch refuses at once at this size; nearer the machine's
    # memory it allocates and initialises it all), so the check compares names and shapes only
    for name, tensor in (("huge_classes.pt", torch.zeros(1).expand(2**40, 32)), ("huge_channels.pt", torch.zeros(1).expand(8, 2**30, 3, 3))):
        path = tmp_path / name
        torch.save({"head.2.weight" if "classes" in name else "stem.0.weight": tensor}, path)
        assert path.stat().st_size < 2000
        with pytest.raises(CheckpointError, match=f"^{name} does not fit cnn_tiny: .* missing keys"):
            uploads.check_checkpoint(path, "cnn_tiny")


def test_a_refused_upload_leaves_the_same_bytes_kept_under_another_name(tmp_path):
    # uploads are kept by content hash: the same state dict uploaded as w.safetensors (refused: not safetensors)
    # removed the whole folder, taking the w.pt kept before, which a job may use
    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(2, 2)}, buffer)
    kept = uploads.keep_checkpoint(tmp_path, "w.pt", buffer.getvalue())
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        uploads.keep_checkpoint(tmp_path, "w.safetensors", buffer.getvalue())
    assert sorted(p.name for p in kept.parent.iterdir()) == [uploads.MARKER, "w.pt"]
    assert uploads.read_checkpoint(kept).tensors["fc.weight"].shape == (2, 2)
    with pytest.raises(CheckpointError):
        uploads.keep_checkpoint(tmp_path, "notes.pt", b"notes")  # alone in its folder: removed whole, as before
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.parent.name]


def test_a_zip_of_images_that_together_decode_out_of_proportion_to_it_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    # a blank 2000x2000 PNG (11.7 kB, within the per-image limits) zips to 151 bytes: 500 of them, a 122 kB upload,
    # took 19 s to read, and 90,000 (the 1 GiB unpacked limit, a 25 MB zip) about an hour; the free pixels are scaled down
    from PIL import Image

    monkeypatch.setattr(uploads, "ZIP_FREE_PIXELS", 10_000_000)
    blank = io.BytesIO()
    Image.new("L", (2000, 2000)).save(blank, format="PNG", optimize=True)
    bomb = zip_of({f"{label}/{index}.png": blank.getvalue() for label in ("cat", "dog") for index in range(2)})
    with pytest.raises(DataError, match=r"^the zip's images decode to 16,000,000 pixels in all, [\d,]+ per byte of the zip .*the limit is 100\): "
                                        "nothing was extracted"):
        uploads.extract_image_zip(bomb, tmp_path / "datasets")
    assert everything_under(tmp_path) == []
    plain = {f"{label}/{index}.png": png() for label in ("cat", "dog") for index in range(3)}
    assert uploads.extract_image_zip(zip_of(plain), tmp_path / "datasets")


def test_an_image_member_is_unpacked_once_however_often_its_reader_seeks_back(tmp_path, monkeypatch):
    # zipfile inflates a member again from its start on every seek back, and PIL seeks back for each TIFF tag whose value
    # lies elsewhere: 30,000 such tags in a 1 MiB member kept the server's process busy for two minutes per image
    from untrusted_data import far_tags_tiff

    inflations = 0
    start = zipfile._get_decompressor

    def counted(compress_type):
        nonlocal inflations
        inflations += 1
        return start(compress_type)

    monkeypatch.setattr(zipfile, "_get_decompressor", counted)
    tiff = far_tags_tiff(300)
    upload = zip_of({"cat/1.tif": tiff, "dog/1.tif": tiff, "padding.bin": os.urandom(len(tiff) // 40)})  # within 100:1
    assert uploads.extract_image_zip(upload, tmp_path / "datasets")
    assert inflations <= 2 * 3  # each member unpacked to be checked, then to be written


def test_uploads_beyond_the_operators_quota_are_refused_and_the_same_bytes_again_take_no_room(tmp_path, monkeypatch):
    """Stop 44: uploads had no quota beyond 200 MB a file and 1 GiB an unpacked zip, so the users of a served dashboard
    could fill its disk, shared with the step cache, the job store and the exports, before any sweep."""
    monkeypatch.setenv("ORDERCOMP_UPLOADS_GB", "0.00003")  # 30 kB
    first = uploads.save_upload(tmp_path / "uploads", "a.pt", bytes(20_000))
    noise = io.BytesIO()
    Image.frombytes("L", (120, 100), os.urandom(12_000)).save(noise, format="PNG")
    tree = zip_of({"cat/1.png": png(), "dog/1.png": png(), "dog/2.png": noise.getvalue()})
    with pytest.raises(DataError, match=r"^the zip's images would take 0\.0 MB, and this server's uploads already hold 0\.00 of "
                                         r"the 3e-05 GB its operator allows \(\$ORDERCOMP_UPLOADS_GB\)"):
        uploads.extract_image_zip(tree, tmp_path / "datasets")
    with pytest.raises(DataError, match=r"^b\.pt would take 0\.0 MB, .* ask the operator for more room, or use a smaller file$"):
        uploads.save_upload(tmp_path / "uploads", "b.pt", os.urandom(20_000))
    assert uploads.save_upload(tmp_path / "uploads", "a.pt", bytes(20_000)) == first  # kept already: no new bytes
    assert everything_under(tmp_path / "datasets") == [] and everything_under(first.parent.parent) == [
        first.parent.name, f"{first.parent.name}/{uploads.MARKER}", f"{first.parent.name}/a.pt"]
    monkeypatch.setenv("ORDERCOMP_UPLOADS_GB", "0.1")
    uploads.discard_upload(first)
    assert uploads.extract_image_zip(tree, tmp_path / "datasets")


def test_an_upload_that_would_leave_the_stores_disk_nearly_full_is_refused(tmp_path, monkeypatch):
    free = uploads.DISK_RESERVE_BYTES + 10_000
    monkeypatch.setattr(uploads.shutil, "disk_usage", lambda path: type("Usage", (), {"free": free})())
    with pytest.raises(DataError, match=r"^a\.pt would take 0\.0 MB, and the disk holding this server's store has 1\.07 GB free, "
                                         r"which must stay above 1\.07 GB: ask the operator to free space$"):
        uploads.save_upload(tmp_path / "uploads", "a.pt", bytes(20_000))
    assert everything_under(tmp_path) == []
    monkeypatch.setenv("ORDERCOMP_UPLOADS_GB", "ten")
    with pytest.raises(DataError, match=r"^\$ORDERCOMP_UPLOADS_GB is 'ten': the operator sets it to the gigabytes uploads may hold"):
        uploads.save_upload(tmp_path / "uploads", "a.pt", bytes(5_000))
