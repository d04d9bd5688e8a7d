"""Targets as data (targets/*.toml), the `targets` listing, and the fit check against a chip's SRAM and flash."""
import json
import re
import shutil
import tomllib

import pytest

from codegen.cli import parse_size
from codegen.targets import known_targets, load_target
from test_cli import assert_one_line_error, run

MCU_TARGETS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "esp32-c3")


def toolchain_missing(name: str) -> str | None:
    t = load_target(name)
    missing = [c for c in (t.cc, t.size, t.emulator.command if t.emulator else None) if c and not shutil.which(c)]
    return f"{name}: {', '.join(missing)} not installed (scripts/setup.sh installs them as root)" if missing else None


def test_every_target_file_parses():
    names = known_targets()
    assert set(MCU_TARGETS) | {"host"} <= set(names)
    for name in names:
        t = load_target(name)
        assert t.name == name and t.kind in ("host", "mcu")
        with open(t.path, "rb") as f:
            assert tomllib.load(f)["name"] == name  # the same file the generated SConstruct reads


@pytest.mark.parametrize("name", MCU_TARGETS)
def test_mcu_targets_name_a_chip_a_board_and_firmware(name):
    from codegen.resources import resource_dir
    t = load_target(name)
    assert t.is_mcu and t.chip and t.core and t.sram_bytes > 0 and t.flash_bytes > 0 and t.stack_bytes > 0
    assert t.emulator.command.startswith("qemu-system-") and t.emulator.machine
    assert t.emulator.instructions_per_tick > 0
    fw = resource_dir("firmware")
    for src in t.firmware:
        assert (fw / src).is_file(), src
    for script in ("board.ld", "chip.ld"):
        assert (fw / t.arch / script).is_file()
    mem = dict(t.emulator.memory)
    assert {"code_origin", "code_size", "big_origin", "big_size", "ram_origin", "ram_size"} <= set(mem)


def test_chip_sizes():
    kib = 1024
    assert (load_target("cortex-m7").sram_bytes, load_target("cortex-m7").flash_bytes) == (320 * kib, 1024 * kib)
    assert (load_target("cortex-m4").sram_bytes, load_target("cortex-m4").flash_bytes) == (128 * kib, 512 * kib)
    assert (load_target("cortex-m33").sram_bytes, load_target("cortex-m33").flash_bytes) == (768 * kib, 2048 * kib)
    assert load_target("esp32-c3").flash_bytes == 4096 * kib


def test_size_overrides_reach_the_project_target_file():
    t = load_target("cortex-m7").with_sizes(sram=64 * 1024)
    assert t.sram_bytes == 64 * 1024 and t.flash_bytes == 1024 * 1024
    data = tomllib.loads(t.file_text())
    assert data["sram_bytes"] == 64 * 1024 and data["flash_bytes"] == 1024 * 1024
    assert load_target("cortex-m7").file_text() == load_target("cortex-m7").path.read_text()


@pytest.mark.parametrize("text,value", [("327680", 327680), ("320K", 327680), ("320KiB", 327680), ("1M", 1 << 20),
                                        ("4MB", 4 << 20)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_targets_listing():
    p = run("targets")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:2] == ["target", "core"]
    for name in MCU_TARGETS + ("host",):
        t = load_target(name)
        row = next(ln for ln in lines if ln.startswith(name + " "))
        assert t.chip in row
        if t.emulator:
            assert t.emulator.machine in row
    assert re.search(r"^cortex-m7 .*STM32F746NG\s+320 KiB\s+1 MiB\s+qemu-system-arm -M mps2-an500$", p.stdout, re.M)
    rows = json.loads(run("targets", "--json").stdout)
    assert {r["name"] for r in rows} == set(known_targets())


def test_fit_check_refuses_with_both_numbers(tmp_path):
    """Bundled alpha 0.35 against a chip far too small: one line with what is needed and what there is."""
    out = tmp_path / "p"
    p = run("--target", "cortex-m7", "--alpha", "0.35", "--calib-samples", "16", "--sram", "16K", "--flash", "256K",
            "-o", str(out))
    assert_one_line_error(p, "does not fit target cortex-m7", "16,384", "262,144", "--no-fit-check")
    line = p.stderr.strip()
    sram_needed = int(re.search(r"SRAM needs ([\d,]+) bytes", line).group(1).replace(",", ""))
    flash_needed = int(re.search(r"flash needs ([\d,]+) bytes", line).group(1).replace(",", ""))
    assert sram_needed > 16384 and flash_needed > 262144
    assert not out.exists()  # refused before anything was written


def test_fit_check_sram_only(tmp_path):
    p = run("--target", "cortex-m4", "--alpha", "0.35", "--calib-samples", "16", "--sram", "20K",
            "-o", str(tmp_path / "p"))
    assert_one_line_error(p, "SRAM needs", "20,480")
    assert "flash needs" not in p.stderr


def test_stack_override_reaches_the_linker_and_the_check(tmp_path):
    """--stack below what the firmware measurably uses: built with that reservation, run, then refused in one line
    naming both figures (the linker's reservation is the one the harness reports)."""
    if reason := toolchain_missing("cortex-m4"):
        pytest.skip(reason)
    out = tmp_path / "p"
    p = run("--target", "cortex-m4", "--alpha", "0.35", "--calib-samples", "16", "--stack", "1K", "-o", str(out))
    assert_one_line_error(p, "bytes of stack on mps2-an386, more than the 1,024 that target cortex-m4 reserves",
                          "--no-fit-check")
    used = int(re.search(r"used ([\d,]+) bytes of stack", p.stderr).group(1).replace(",", ""))
    assert used > 1024
    assert tomllib.loads((out / "target.toml").read_text())["stack_bytes"] == 1024
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["stack"]["used"] == used and meta["stack"]["reserved"] == 1024


def test_fit_check_passes_and_is_recorded(tmp_path):
    """Large enough (given explicitly): generated, built for board and chip, run bit-exact; metadata.json records
    the fit measured from the ELF."""
    if reason := toolchain_missing("cortex-m7"):
        pytest.skip(reason)
    out = tmp_path / "p"
    p = run("--target", "cortex-m7", "--alpha", "0.35", "--calib-samples", "16", "--sram", "64K", "--flash", "600K",
            "-o", str(out), "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["bit_exact"] and summary["fit"]["fits"] and summary["instructions"][0] > 1_000_000
    assert 256 < summary["stack"]["used"] <= summary["stack"]["reserved"] == load_target("cortex-m7").stack_bytes
    meta = json.loads((out / "metadata.json").read_text())
    fit = meta["fit"]
    assert fit["fits"] and "measured" in fit["source"]
    assert fit["sram"]["available"] == 64 * 1024 and fit["flash"]["available"] == 600 * 1024
    assert fit["sram"]["parts"]["arena"] == meta["arena_bytes"]
    assert fit["flash"]["parts"]["weights"] >= meta["param_bytes"]
    assert fit["flash"]["needed"] <= 600 * 1024 and fit["sram"]["needed"] <= 64 * 1024
    assert (out / "build" / "cortex-m7" / "mnv2_chip.elf").is_file()  # linked for the chip's own memory map
    assert tomllib.loads((out / "target.toml").read_text())["sram_bytes"] == 64 * 1024
    assert meta["stack"]["used"] == summary["stack"]["used"] and "measured" in meta["stack"]["source"]
    # a hung or slow guest becomes a one-line error, never a hang of the caller
    from codegen.emulate import run_firmware
    from codegen.errors import UserError
    with pytest.raises(UserError, match="did not finish within"):
        run_firmware(load_target("cortex-m7"), out / "build" / "cortex-m7" / "mnv2_board.elf", timeout=0.05)
