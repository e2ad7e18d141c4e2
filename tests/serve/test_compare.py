"""Source beside stored: the source is read only from the row's path, only when it is a regular
file with the recorded content; the zoom goes where the stored image changed most."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from preprocess.core.errors import ConfigError
from preprocess.pipeline.regions import changed_region
from preprocess.serve import compare
from preprocess.serve.compare import source_bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_source_is_read_only_when_it_is_the_recorded_regular_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8\xff" + os.urandom(5000))
    data = photo.read_bytes()
    assert source_bytes(str(photo), sha(data)) == data
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    assert source_bytes(str(link), sha(data)) == data  # sources may be symlinks (list_sources keeps them)

    def reason(path: str, digest: str = sha(data)) -> str:
        with pytest.raises(ConfigError) as e:
            source_bytes(path, digest)
        assert e.value.code == "SOURCE_UNAVAILABLE"
        return e.value.message

    assert "has changed" in reason(str(photo), sha(b"other"))
    assert "not readable here" in reason(str(tmp_path / "gone.jpg"))
    assert "not a regular file" in reason(str(tmp_path))
    assert "no source path" in reason("")
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    evil = tmp_path / "evil.jpg"
    evil.symlink_to(passwd)
    assert "has changed" in reason(str(evil))  # a path recorded by a hostile store shows nothing
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    done: list[str] = []
    t = threading.Thread(target=lambda: done.append(reason(str(fifo))), daemon=True)
    t.start()
    t.join(5)
    assert done and "not a regular file" in done[0]  # and it did not block on the FIFO
    monkeypatch.setattr(compare, "MAX_SOURCE_BYTES", 1000)
    assert "larger than" in reason(str(photo))


def test_the_region_that_changed_most_is_found_anywhere_including_the_edges() -> None:
    rng = np.random.default_rng(3)
    for h, w, y, x in [(480, 640, 200, 300), (480, 640, 400, 560), (300, 451, 0, 0), (64, 48, 40, 30)]:
        diff = rng.random((h, w)).astype(np.float32) * 2
        diff[y:y + 16, x:x + 16] += 50
        r = changed_region(diff)
        overlap = (min(r.x + r.width, x + 16) - max(r.x, x)) * (min(r.y + r.height, y + 16) - max(r.y, y))
        assert overlap >= 16 * 16 // 2, (h, w, r)  # at least half the damaged patch is in the tile
        assert r.x + r.width <= w and r.y + r.height <= h and r.width == r.height
        assert r.mean_abs_diff > 2


def test_compare_zooms_where_a_real_photo_was_damaged(small_photos: list[Path]) -> None:
    src = Image.open(next(p for p in small_photos if p.name == "chelsea.png")).convert("RGB")
    buf = io.BytesIO()
    src.save(buf, format="PNG")
    stored = src.resize((300, 200), Image.Resampling.LANCZOS)
    box = (210, 40, 250, 80)  # blur a patch of the stored image: that is what changed most
    stored.paste(stored.crop(box).filter(ImageFilter.GaussianBlur(6)), box[:2])
    c = compare.compare(buf.getvalue(), stored)
    r = c.region
    assert r.x < box[2] and box[0] < r.x + r.width and r.y < box[3] and box[1] < r.y + r.height
    assert c.size == (300, 200) and c.source_size == src.size
    assert r.mean_abs_diff > 3 * c.mean_abs_diff
    views = {k: Image.open(io.BytesIO(v)) for k, v in c.images.items()}
    assert views["source"].size == (300, 200)
    assert views["zoom-source"].size == views["zoom-stored"].size == views["zoom-diff"].size == \
        (r.width * c.scale, r.height * c.scale)
    assert np.asarray(views["zoom-diff"]).min() < 128  # the blurred patch shows dark


def test_a_source_replaced_by_a_link_out_of_its_folder_is_not_read(tmp_path: Path) -> None:
    """Issue 25 item 14: the row's source replaced by a link to a file outside its folder was opened and
    hashed (and shown, when the bytes were the same). Now it is not followed at all."""
    folder, outside = tmp_path / "in", tmp_path / "secret"
    folder.mkdir()
    outside.mkdir()
    data = b"\xff\xd8\xff" + os.urandom(5000)
    (outside / "a.jpg").write_bytes(data)
    (folder / "a.jpg").symlink_to(outside / "a.jpg")  # the same bytes, even
    with pytest.raises(ConfigError) as e:
        source_bytes(str(folder / "a.jpg"), sha(data))
    assert e.value.code == "SOURCE_UNAVAILABLE" and "leads out of its folder" in e.value.message


def test_a_source_whose_name_is_not_utf8_is_found_by_its_stored_name(tmp_path: Path) -> None:
    data = b"\xff\xd8\xff" + os.urandom(5000)
    (tmp_path / os.fsdecode(b"caf\xe9.jpg")).write_bytes(data)
    assert source_bytes(f'"{tmp_path}/caf\\351.jpg"', sha(data)) == data  # as the store holds it (quoted)
