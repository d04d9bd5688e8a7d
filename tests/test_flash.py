"""`mnv2-codegen flash`: the commands per target family, and clear errors without the tool or without a board."""
import shutil
import stat

import pytest

from codegen import cli
from codegen.errors import UserError
from codegen.flash import IDF_BUILD_DIR, flash, flash_commands
from codegen.targets import load_target


def project(tmp_path, target):
    """A generated project's skeleton: its target.toml and a built chip image (no SCons run needed)."""
    d = tmp_path / f"proj-{target}"
    d.mkdir()
    shutil.copy(load_target(target).path, d / "target.toml")
    (d / "build" / target).mkdir(parents=True)
    (d / "build" / target / "mnv2_chip.elf").write_bytes(b"\x7fELF")
    return d


def cfg(target):
    import tomllib
    return tomllib.loads(load_target(target).file_text())["flash"]


@pytest.mark.parametrize("target,pyocd_name", [("cortex-m7", "stm32f746nghx"), ("cortex-m4", "stm32f446retx"),
                                                   ("cortex-m33", "stm32u585aiix")])
def test_pyocd_command(tmp_path, target, pyocd_name):
    plan = flash_commands(target, cfg(target), tmp_path)
    assert plan.tool == "pyocd" and plan.build_chip
    assert plan.commands == (("pyocd", "flash", "--no-wait", "-t", pyocd_name,
                              str(tmp_path / "build" / target / "mnv2_chip.elf")),)
    plan = flash_commands(target, cfg(target), tmp_path, port="0670FF48")
    assert plan.commands[0][5:7] == ("-u", "0670FF48")


def test_esp_idf_commands(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text("project(mnv2_example)\n")
    plan = flash_commands("esp32-c3", cfg("esp32-c3"), tmp_path, port="/dev/ttyUSB0", idf_available=True)
    assert plan.tool == "idf.py" and plan.cwd == tmp_path
    assert plan.commands == (("idf.py", "-B", IDF_BUILD_DIR, "set-target", "esp32c3"),
                             ("idf.py", "-B", IDF_BUILD_DIR, "-p", "/dev/ttyUSB0", "flash"))
    (tmp_path / "sdkconfig").write_text("")
    assert flash_commands("esp32-c3", cfg("esp32-c3"), tmp_path, idf_available=True).commands == \
        (("idf.py", "-B", IDF_BUILD_DIR, "flash"),)


def test_esptool_commands_without_idf(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text("project(mnv2_example)\n")
    with pytest.raises(UserError, match="ESP-IDF is needed to build the image"):
        flash_commands("esp32-c3", cfg("esp32-c3"), tmp_path)
    build = tmp_path / IDF_BUILD_DIR
    build.mkdir(parents=True)
    (build / "mnv2_example.bin").write_bytes(b"\xe9")
    plan = flash_commands("esp32-c3", cfg("esp32-c3"), tmp_path, esptool="esptool")
    assert plan.commands == (("esptool", "--chip", "esp32c3", "write_flash", "0x10000",
                              str(build / "mnv2_example.bin")),)
    (build / "flash_args").write_text("0x0 bootloader/bootloader.bin\n")
    plan = flash_commands("esp32-c3", cfg("esp32-c3"), tmp_path, port="COM3", esptool="esptool.py")
    assert plan.cwd == build
    assert plan.commands == (("esptool.py", "--chip", "esp32c3", "-p", "COM3", "write_flash", "@flash_args"),)


def test_target_without_flash_tool(tmp_path):
    with pytest.raises(UserError, match="no flashing tool configured.*Corstone-300"):
        flash_commands("cortex-m55", cfg("cortex-m55"), tmp_path)


def fake_tool(tmp_path, name, script):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_missing_pyocd(tmp_path, monkeypatch):
    d = project(tmp_path, "cortex-m7")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"'pyocd' not found on PATH: install pyocd \(pip install pyocd"):
        flash(d, "cortex-m7")


def test_missing_esptool(tmp_path, monkeypatch):
    d = project(tmp_path, "esp32-c3")
    (d / "CMakeLists.txt").write_text("project(mnv2_example)\n")
    (d / IDF_BUILD_DIR).mkdir(parents=True)
    (d / IDF_BUILD_DIR / "mnv2_example.bin").write_bytes(b"\xe9")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("IDF_PATH", raising=False)
    with pytest.raises(UserError, match=r"'esptool' not found on PATH: install esptool"):
        flash(d, "esp32-c3")


def test_no_probe(tmp_path, monkeypatch):
    """What pyOCD 0.46 prints with nothing attached: `pyocd list` says so (exit 0); `pyocd flash --no-wait` says
    "No connected debug probes" and exits 1."""
    d = project(tmp_path, "cortex-m7")
    bin_dir = fake_tool(tmp_path, "pyocd", 'if [ "$1" = list ]; then echo "No available debug probes are connected";'
                                           ' exit 0; fi\necho "No connected debug probes"\n'
                                           'echo "0000317 E No target device available [load_cmd]" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(UserError, match="^no debug probe found"):
        flash(d, "cortex-m7")
    # a probe is listed, but the flash itself finds none (unplugged in between)
    fake_tool(tmp_path, "pyocd", 'if [ "$1" = list ]; then echo "  0   STM32 STLink   0670FF48   n/a"; exit 0; fi\n'
                                 'echo "No connected debug probes"\nexit 1\n')
    with pytest.raises(UserError, match="^no debug probe found"):
        flash(d, "cortex-m7")


def test_flash_runs_pyocd(tmp_path, monkeypatch, capsys):
    d = project(tmp_path, "cortex-m7")
    log = tmp_path / "argv.txt"
    bin_dir = fake_tool(tmp_path, "pyocd", f'echo "$@" >> {log}\nexit 0\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert cli.main(["flash", "--target", "cortex-m7", str(d)]) == 0
    assert log.read_text().splitlines() == [
        "list", f"flash --no-wait -t stm32f746nghx {d / 'build' / 'cortex-m7' / 'mnv2_chip.elf'}"]
    assert "flashed" in capsys.readouterr().out


def test_wrong_target_and_not_a_project(tmp_path):
    d = project(tmp_path, "cortex-m7")
    with pytest.raises(UserError, match="generated for target cortex-m7, not cortex-m4"):
        flash(d, "cortex-m4")
    with pytest.raises(UserError, match="not a generated project"):
        flash(tmp_path / "nothing", "cortex-m7")
