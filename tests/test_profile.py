"""`mnv2-codegen profile`: instructions per layer on the emulated board (QEMU TCG plugin) add up to the total."""
import json

import pytest

from codegen import cli
from codegen.emit import KERNELS
from codegen.errors import UserError
from codegen.generate import generate
from codegen.pipeline import CalibOptions, compile_front
from codegen.profile import attribute, parse_trace, profile, Symbol
from test_targets import toolchain_missing

CALIB = CalibOptions(samples=32)
# Instructions of mnv2_invoke outside the kernels: its own argument setup (a few per call) and the memcpy of the
# input image into the arena and of the logits out (a few instructions per 4 bytes on the portable memcpy).
OVERHEAD_FIXED = 2000
OVERHEAD_PER_INPUT_BYTE = 2


@pytest.fixture(scope="module")
def m7_profile(tmp_path_factory):
    if reason := toolchain_missing("cortex-m7"):
        pytest.skip(reason)
    c = compile_front(0.35, None, None, CALIB)  # the bundled alpha 0.35 checkpoint
    out = tmp_path_factory.mktemp("profile") / "m7"
    gen = generate("cortex-m7", None, None, None, CALIB, str(out), fit_check=False, compiled=c)
    return gen, profile(gen.elf, gen.schedule, gen.target, gen.variant / "profile")


def test_layers_add_up_to_the_total(m7_profile):
    gen, prof = m7_profile
    layers = prof["layers"]
    assert [r["name"] for r in layers] == [s.op for s in gen.schedule.steps]
    assert prof["macs"] == gen.schedule.macs == sum(r["macs"] for r in layers)
    for r in layers:
        assert r["instructions"] > 0, r
        if r["macs"]:
            assert 2 * r["instructions"] >= r["macs"], r  # the cortex-m7 does at most 2 MACs an instruction (SMLAD)
            assert r["instructions_per_mac"] == pytest.approx(r["instructions"] / r["macs"], abs=1e-3)
    total = prof["total_instructions"]
    assert prof["layer_sum"] == sum(r["instructions"] for r in layers)
    assert prof["layer_sum"] + prof["overhead"]["instructions"] == total  # exact by construction
    assert sum(prof["overhead"]["parts"].values()) == prof["overhead"]["instructions"]
    input_bytes = gen.test_inputs[0].size
    assert 0 < prof["overhead"]["instructions"] <= OVERHEAD_FIXED + OVERHEAD_PER_INPUT_BYTE * input_bytes
    # the harness's own count of the same call (board timer under -icount, 40-instruction ticks) agrees
    assert abs(prof["harness_instructions"] - total) <= 80
    assert gen.schedule.macs < total < 100 * gen.schedule.macs


def test_profile_cli_json(m7_profile, capsys):
    gen, prof = m7_profile
    rc = cli.main(["profile", "--target", "cortex-m7", "--alpha", "0.35", "--calib-samples", "32",
                   "-o", str(gen.project), "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert {"total_instructions", "macs", "layers", "instructions_per_mac", "overhead"} <= set(got)
    assert got["bit_exact"] is True
    assert got["total_instructions"] == prof["total_instructions"]  # deterministic
    for r in got["layers"]:
        assert set(r) >= {"name", "kernel", "macs", "instructions", "instructions_per_mac"}


def test_profile_speed_flash_option(m7_profile, tmp_path, capsys):
    """`profile --speed-flash 0` profiles the build without widened weights: bit-exact, more instructions."""
    _, prof = m7_profile
    rc = cli.main(["profile", "--target", "cortex-m7", "--alpha", "0.35", "--calib-samples", "32",
                   "-o", str(tmp_path / "p"), "--speed-flash", "0", "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert got["bit_exact"] is True
    assert json.loads((tmp_path / "p" / "metadata.json").read_text())["widened_bytes"] == 0
    assert got["total_instructions"] > prof["total_instructions"]


def test_profile_rejects_host():
    for name in ("host", "esp32-s3"):  # checked before anything is generated
        with pytest.raises(UserError, match=f"target {name} has none"):
            cli.cmd_profile(cli.build_parser().parse_args(["profile", "--target", name, "--alpha", "0.35"]))


class _Step:
    def __init__(self, op, kernel, macs):
        self.op, self.kernel, self.macs = op, kernel, macs


class _Schedule:
    def __init__(self, steps):
        self.steps = tuple(steps)


SYMS = {"mnv2_invoke": Symbol("mnv2_invoke", 0x40, 0x100), "main": Symbol("main", 0x800, 0x80),
        "memcpy": Symbol("memcpy", 0x900, 0x40), KERNELS["conv"][0]: Symbol(KERNELS["conv"][0], 0x200, 0x100),
        KERNELS["fc"][0]: Symbol(KERNELS["fc"][0], 0x300, 0x80)}


def test_attribute_synthetic_trace_with_tail_call():
    # main -> invoke -> memcpy -> invoke -> conv -> invoke -> fc -> invoke -> memcpy (tail call) -> main
    trace = "\n".join(["0x0 0 0", "0x800 10 2", "0x40 20 1", "0x900 25 0", "0x50 60 1", "0x200 62 0",
                       "0x60 1062 1", "0x300 1065 0", "0x70 1265 1", "0x900 1270 0", "0x810 1280 2", "end 1300"])
    sched = _Schedule([_Step("stem", "conv", 100), _Step("logits", "fc", 20)])
    r = attribute(parse_trace(trace), SYMS, sched)
    assert r["total_instructions"] == 1260
    assert [(x["name"], x["instructions"]) for x in r["layers"]] == [("stem", 1000), ("logits", 200)]
    assert r["overhead"]["parts"] == {"mnv2_invoke (own code: call setup)": 5 + 2 + 3 + 5, "memcpy": 35 + 10}
    assert r["layer_sum"] + r["overhead"]["instructions"] == r["total_instructions"]


def test_attribute_detects_a_schedule_mismatch():
    trace = "0x800 0 2\n0x40 5 1\n0x200 6 0\n0x50 16 1\n0x810 18 2\n"
    with pytest.raises(UserError, match="1 kernel calls"):
        attribute(parse_trace(trace), SYMS, _Schedule([_Step("a", "conv", 1), _Step("b", "fc", 1)]))
    with pytest.raises(UserError, match="should call"):
        attribute(parse_trace(trace), SYMS, _Schedule([_Step("a", "fc", 1)]))
