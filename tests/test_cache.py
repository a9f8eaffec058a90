"""Files written through quantlab.cache: the user's umask, one line when the place is full or
read-only, nothing half-written left behind, and a writability check that touches nothing.

A full disk and a read-only file system are staged for real, on a tiny tmpfs mounted for
the test (root only); a file size limit (ulimit -f, which makes writes fail with EFBIG) is
staged in a child process anywhere.
"""

import contextlib
import json
import os
import subprocess
import sys
import threading

import pytest

from quantlab import cache
from quantlab.errors import QuantlabError
from test_datasets import error_without_permission, folder_others_can_enter


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return path.stat().st_mode & 0o777


@contextlib.contextmanager
def mounted_tmpfs(folder, options):
    folder.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to stage a full or read-only disk: "
                    f"{mount.stderr.strip() or 'not permitted'}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB file system holding a file of the user's."""
    with mounted_tmpfs(tmp_path / "tiny", "size=64k,mode=0755") as folder:
        (folder / "report.md").write_text("the user's own report\n")
        yield folder


@pytest.fixture
def read_only_disk(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k,mode=0755") as folder:
        yield folder


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- modes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask, file_mode, folder_mode", [
    (0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
    ids=["umask-022", "umask-077", "umask-002"])
def test_files_and_folders_are_created_with_the_user_s_umask(tmp_path, mask, file_mode, folder_mode):
    with umask(mask):
        cache.write_json(tmp_path / "results.json", {"a": 1})
        with cache.atomic_file(tmp_path / "model.tflite") as tmp:
            tmp.write_bytes(b"TFL3")
        with cache.atomic_dir(tmp_path / "models" / "net") as tmp:
            (tmp / "weights.h5").write_bytes(b"")
    assert mode(tmp_path / "results.json") == mode(tmp_path / "model.tflite") == file_mode
    assert mode(tmp_path / "models" / "net") == mode(tmp_path / "models") == folder_mode
    assert mode(tmp_path / "models" / "net" / "weights.h5") == file_mode


# --- full, read-only or size-limited places -------------------------------------------------

def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(full_disk):
    target = full_disk / "report.md"
    with pytest.raises(QuantlabError) as excinfo:
        with cache.atomic_file(target) as tmp:
            tmp.write_bytes(bytes(1 << 20))
    assert one_line(excinfo) == (f"cannot write {target}: no space left on the device; make room "
                                 f"there, or choose another folder (--out DIR)")
    assert os.listdir(full_disk) == ["report.md"]
    assert target.read_text() == "the user's own report\n"


def test_a_full_disk_under_the_cache_says_to_move_the_cache(full_disk, monkeypatch):
    monkeypatch.setenv("QUANTLAB_CACHE", str(full_disk))
    with pytest.raises(QuantlabError) as excinfo:
        with cache.atomic_dir(full_disk / "models" / "medium") as tmp:
            (tmp / "weights.h5").write_bytes(bytes(1 << 20))
    assert "no space left on the device" in one_line(excinfo)
    assert "set QUANTLAB_CACHE to a folder with room" in str(excinfo.value)
    assert sorted(os.listdir(full_disk)) == ["models", "report.md"]
    assert os.listdir(full_disk / "models") == []


def test_a_read_only_file_system_is_one_line_naming_the_file(read_only_disk):
    target = read_only_disk / "results.json"
    with pytest.raises(QuantlabError) as excinfo:
        cache.write_json(target, {"a": 1})
    assert one_line(excinfo) == (f"cannot write {target}: read-only file system; choose another "
                                 f"folder (--out DIR)")
    assert os.listdir(read_only_disk) == []


FILE_SIZE_LIMITED = """
import os, resource, sys
from quantlab import cache
from quantlab.errors import QuantlabError
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    with cache.atomic_file(sys.argv[1]) as tmp:
        tmp.write_bytes(bytes(1 << 20))
except QuantlabError as error:
    print(error)
"""


def test_a_file_size_limit_is_one_line_and_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "int8.tflite"
    target.write_bytes(b"the earlier file")
    out = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED, str(target)],
                         capture_output=True, text=True, check=True).stdout
    assert out == (f"cannot write {target}: file larger than the file size limit (ulimit -f) "
                   f"or the file system allows; raise the limit, or choose another folder "
                   f"(--out DIR)\n")
    assert os.listdir(tmp_path) == ["int8.tflite"]
    assert target.read_bytes() == b"the earlier file"


def test_errors_that_are_not_about_the_place_pass_through_untouched(tmp_path):
    with pytest.raises(FileNotFoundError):
        with cache.atomic_file(tmp_path / "out.json"):
            (tmp_path / "missing-input").read_bytes()
    assert os.listdir(tmp_path) == []


# --- check_writable ---------------------------------------------------------------------------

def test_check_writable_creates_the_folder_and_leaves_and_deletes_nothing(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    for name in (".write-test", "report.md", ".quantlab-write-test"):
        (folder / name).write_text("mine")
    before = sorted(os.listdir(folder))
    cache.check_writable(folder)
    cache.check_writable(tmp_path / "new" / "folder")
    assert sorted(os.listdir(folder)) == before
    assert all((folder / name).read_text() == "mine" for name in before)
    assert os.listdir(tmp_path / "new" / "folder") == []


def test_check_writable_names_a_full_disk(full_disk):
    filler = full_disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        f.write(bytes(1 << 20))  # fills the rest of the 64 KiB
    with pytest.raises(QuantlabError) as excinfo:
        cache.check_writable(full_disk, "output folder", "choose another with --out")
    assert one_line(excinfo) == (f"cannot write to output folder {full_disk}: no space left on "
                                 f"the device; choose another with --out")
    assert sorted(os.listdir(full_disk)) == ["filler", "report.md"]


def test_check_writable_names_a_read_only_file_system_and_a_file_in_the_way(read_only_disk,
                                                                             tmp_path):
    with pytest.raises(QuantlabError) as excinfo:
        cache.check_writable(read_only_disk / "cache", "cache folder")
    assert one_line(excinfo).startswith(f"cannot write to cache folder {read_only_disk / 'cache'}: "
                                        "read-only file system;")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(QuantlabError) as excinfo:
        cache.check_writable(tmp_path / "a-file" / "report", "output folder", "choose another")
    assert one_line(excinfo) == (f"cannot write to output folder {tmp_path / 'a-file' / 'report'}: "
                                 "part of the path is a file; choose another")


def test_check_writable_names_a_folder_the_user_may_not_write():
    with folder_others_can_enter() as folder:
        message = error_without_permission(
            folder, lambda: cache.check_writable(folder, "output folder", "choose another"))
        assert message == (f"QuantlabError: cannot write to output folder {folder}: permission "
                           f"denied; choose another")
        assert os.listdir(folder) == []


def test_json_written_through_the_cache_reads_back(tmp_path):
    cache.write_json(tmp_path / "x.json", {"b": [1, 2], "a": "é"})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": "é", "b": [1, 2]}


def test_a_process_that_wants_an_artifact_another_is_making_waits_for_it_and_says_so(tmp_path):
    artifact = tmp_path / "variants" / "net-key"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom quantlab import cache\n"
         f"with cache.locked({str(artifact)!r}):\n    print('held', flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        said, entered = [], threading.Event()

        def wait_for_the_lock():
            with cache.locked(artifact, said.append):
                entered.set()

        waiter = threading.Thread(target=wait_for_the_lock)
        waiter.start()
        assert not entered.wait(0.5)  # the other process still makes it
        assert said == [f"waiting for another quantlab process that is making {artifact}"]
        holder.stdin.close()  # it is done
        assert entered.wait(10)
        waiter.join()
    finally:
        holder.kill()
        holder.wait()
    with cache.locked(artifact, said.append):  # free: no waiting, nothing said
        assert len(said) == 1


def test_an_artifact_in_a_read_only_cache_is_looked_up_without_a_lock(read_only_disk):
    with cache.locked(read_only_disk / "models" / "net-key"):  # no lock file can be made here
        entered = True
    assert entered and list(read_only_disk.iterdir()) == []


def test_a_lock_file_planted_as_a_link_creates_nothing_where_it_points(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / ".net-key.lock").symlink_to(tmp_path / "elsewhere")
    with cache.locked(tmp_path / "models" / "net-key"):
        pass
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("setting, expected", [
    ("cache", "work/cache"), ("./a/../cache", "work/cache"), ("~/cache", "home/cache"),
    ("", "home/.cache/quantlab")])
def test_the_cache_folder_is_absolute_whatever_quantlab_cache_says(tmp_path, monkeypatch, setting,
                                                                    expected):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUANTLAB_CACHE", setting)
    root = cache.cache_root()
    assert root.is_absolute() and root == tmp_path / expected


def test_a_relative_cache_folder_in_a_deleted_current_folder_is_one_line(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    monkeypatch.setenv("QUANTLAB_CACHE", "cache")
    with pytest.raises(QuantlabError) as excinfo:
        cache.cache_root()
    assert one_line(excinfo) == ("QUANTLAB_CACHE cache is relative to the current folder, which no "
                                 "longer exists; give it as an absolute path")
