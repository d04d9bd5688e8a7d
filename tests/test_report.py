"""The memory report: figures consistent with the plans, JSON fields, the picture, the CLI."""
import json

from codegen.memory import plan
from codegen.report import build_report, format_text, plot
from test_cli import run
from test_memory import quant_graph


def test_report_figures_match_the_plans(tmp_path):
    g = quant_graph(0.35, 96)
    r = build_report(g, tflm={"head": 200_000, "total": 250_000, "tail": 50_000}, sram_bytes=64 * 1024)
    assert r["peak_bytes"] == plan(g, "streamed").arena_bytes
    assert r["layerwise_peak_bytes"] == plan(g, "layerwise").arena_bytes
    assert r["peak_bytes"] < r["paper_bound_bytes"] < r["layerwise_peak_bytes"]
    assert r["fits_sram"] is True and r["ratio_tflm"] == round(200_000 / r["peak_bytes"], 2)
    assert [b["name"] for b in r["blocks"]] == [name for name, _ in g.blocks]
    for b in r["blocks"]:
        assert b["live"] <= r["peak_bytes"]
        if b["expanded_bytes"]:  # the row band is never worse than layer by layer, and slices need in + out
            assert b["row_band"] <= b["layerwise"]
            assert b["channel_slices"] >= b["input_bytes"] + b["output_bytes"]
    text = format_text(r)
    assert "planned peak" in text and "TFLM arena" in text and "fits" in text
    plot(r, tmp_path / "mem.png")
    assert (tmp_path / "mem.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_cli_json_with_tflm(tmp_path, checkpoint_factory):
    p = run("report", "--weights", str(checkpoint_factory(0.35)), "--calib-samples", "8", "--target", "cortex-m7",
            "--json", "--plot", str(tmp_path / "m.svg"))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    for key in ("peak_bytes", "layerwise_peak_bytes", "tflm_arena_bytes", "blocks"):
        assert key in r
    assert r["tflm_arena_bytes"] > r["layerwise_peak_bytes"] > r["peak_bytes"] > 0
    assert r["sram_bytes"] == 320 * 1024 and r["fits_sram"] is True
    assert (tmp_path / "m.svg").exists()
