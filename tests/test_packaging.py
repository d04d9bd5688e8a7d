"""A non-editable install must carry its templates, targets, firmware, weights and sample image."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_data_files(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("mnv2_codegen-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for source, installed in ((ROOT / "templates", "codegen/templates"), (ROOT / "targets", "codegen/targets"),
                              (ROOT / "firmware", "codegen/firmware")):
        files = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()
                 and "__pycache__" not in p.parts]
        assert files
        for rel in files:
            assert f"{installed}/{rel}" in names, rel
    for ckpt in (ROOT / "codegen" / "weights").glob("*.pt"):
        assert f"codegen/weights/{ckpt.name}" in names
    assert "codegen/samples/star.png" in names
    assert not any("/build/" in n or n.endswith(".pyc") for n in names)
