"""Hostile inputs, tried: hostile image files and paths, the study lock, and fuzzed datasets and
recipes, with what fairsynth made of each, in one table.

    python benchmarks/hostile_inputs.py              # about 2 minutes on 2 cores: 100 fuzz cases per target
    python benchmarks/hostile_inputs.py --fuzz 500   # the slow test run's count (about 8 minutes)

Columns: ``case``, ``tried`` (inputs or attempts), ``handled`` (how many ended as fairsynth
promises: a problem naming the file and row, a clear error, or the image read and converted),
``how`` (what the user sees). A case that is not handled says what happened instead. The
sections can be imported (``rows()``) by a script that joins them to another table.

The files are made by ``tests/hostile.py`` and the fuzz cases by ``tests/data/fuzzing.py``,
the same ones the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from typer.testing import CliRunner  # noqa: E402

from fairsynth.cli import EXIT_LOCKED, app  # noqa: E402
from tests import hostile  # noqa: E402
from tests.helpers import fitz_rows, make_image  # noqa: E402

Row = tuple[str, int, int, str]
runner = CliRunner()


def _short(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validate_one(make: Callable[[Path], str], kind: str) -> tuple[bool, str]:
    """`fairsynth validate` on an imagefolder of one good image and the hostile one."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ds"
        root.mkdir()
        name = make(root)
        make_image(root / "good.png")
        rows = [{"file_name": "good.png"}, {"file_name": name}]
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        result = runner.invoke(app, ["validate", "--reader", "imagefolder", str(root)])
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if f"[{kind}]" in line]
    if crashed or result.exit_code != 1 or not lines:
        return False, f"exit {result.exit_code}: {_short(repr(result.exception) if crashed else result.output)}"
    message = lines[0].split(f"[{kind}]", 1)[1].strip()
    return True, f"validate exit 1: [{kind}] {_short(message, 100)}"


FILES: dict[str, tuple[Callable[[Path], str], str]] = {
    "image bomb: 20000 x 20000 PNG (48 KB)": (lambda d: hostile.image_bomb(d), "too_large"),
    "PNG with an iCCP chunk inflating to 64 MiB": (lambda d: hostile.png_with_huge_chunk(d, "p.png", b"iCCP"), "bad_metadata"),
    "PNG with a zTXt chunk inflating to 64 MiB": (lambda d: hostile.png_with_huge_chunk(d, "t.png", b"zTXt"), "bad_metadata"),
    "JPEG with EXIF orientation 9": (lambda d: hostile.jpeg_with_orientation(d, "o.jpg", 9), "bad_exif"),
    "JPEG with a corrupt EXIF block": (lambda d: hostile.jpeg_with_corrupt_exif(d, "e.jpg"), "bad_exif"),
    "zero-byte file": (lambda d: hostile.zero_byte(d), "empty_file"),
    "HTML page named .jpg": (lambda d: hostile.html_named_jpg(d), "not_an_image"),
    "truncated JPEG": (lambda d: hostile.truncated_jpeg(d), "truncated"),
    "symlink loop": (lambda d: hostile.symlink_loop(d), "unreadable"),
    "path of 5,000 characters": (lambda d: hostile.long_path(5000), "unreadable"),
    "path with a NUL byte": (lambda d: "a\x00b.jpg", "unreadable"),
    "path with ..": (lambda d: "../outside.png", "unsafe_path"),
    "absolute path": (lambda d: "/etc/hostname", "unsafe_path"),
    "symlink out of the root": (lambda d: (os.symlink("/etc/hostname", d / "out.png"), "out.png")[1], "unsafe_path"),
}


def file_rows() -> list[Row]:
    rows = []
    for case, (make, kind) in FILES.items():
        ok, how = _validate_one(make, kind)
        if kind == "bad_exif" and "corrupt" in case:  # a note: the image is kept, used as stored
            ok, how = _corrupt_exif_kept(make)
        rows.append((case, 1, int(ok), how))
    rows.append(_fitzpatrick_bomb())
    rows.append(_prepare_bomb())
    return rows


def _corrupt_exif_kept(make: Callable[[Path], str]) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        name = make(root)
        (root / "metadata.jsonl").write_text(json.dumps({"file_name": name}) + "\n")
        result = runner.invoke(app, ["validate", "--reader", "imagefolder", str(root)])
    ok = result.exit_code == 0 and "note:" in result.output and "[bad_exif]" in result.output
    return ok, "validate exit 0 with a note: [bad_exif] corrupt, no orientation; used as stored" if ok else _short(result.output)


def _fitzpatrick_bomb() -> Row:
    """The issue's case: a Fitzpatrick17k CSV whose image is a 20000 x 20000 PNG."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        frame = fitz_rows(6)
        for i, md5 in enumerate(frame.md5hash):
            make_image(root / "images" / f"{md5}.jpg", seed=i)
        (root / "images" / f"{frame.md5hash[2]}.jpg").unlink()
        hostile.image_bomb(root / "images", f"{frame.md5hash[2]}.jpg")
        frame.to_csv(root / "fitzpatrick17k.csv", index=False)
        result = runner.invoke(app, ["validate", "--reader", "fitzpatrick17k", str(root / "fitzpatrick17k.csv")])
    ok = result.exit_code == 1 and "[too_large]" in result.output and "Traceback" not in result.output
    return ("Fitzpatrick17k CSV with the bomb as one image", 1, int(ok),
            "validate lists it with the others, exit 1 (was: raw DecompressionBombError)" if ok else _short(result.output))


def _prepare_bomb() -> Row:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ds"
        for i in range(3):
            make_image(root / f"ok{i}.png", size=64, seed=i)
        hostile.image_bomb(root)
        names = ["ok0.png", "ok1.png", "ok2.png", "bomb.png"]
        (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "label": "x"}) + "\n" for n in names))
        recipe = Path(folder) / "r.yaml"
        recipe.write_text(json.dumps({
            "workdir": str(Path(folder) / "study"), "data": {"reader": "imagefolder", "path": str(root)},
            "prepare": {"output": str(Path(folder) / "out"), "resolution": [32], "estimate_fst": False,
                        "split": {"val": 0.0, "test": 0.0, "stratify": []}},
        }))
        stopped = runner.invoke(app, ["prepare", "--config", str(recipe)])
        dropped = runner.invoke(app, ["prepare", "--config", str(recipe), "--drop-invalid"])
        rejects = (Path(folder) / "out" / "rejects.csv").read_text() if dropped.exit_code == 0 else ""
    ok = [stopped.exit_code == 1 and "[too_large]" in stopped.output, dropped.exit_code == 0 and "too_large" in rejects]
    return ("prepare with the bomb: as is / --drop-invalid", 2, sum(ok),
            "stops (exit 1) naming it; --drop-invalid skips it into rejects.csv" if all(ok)
            else _short(stopped.output + dropped.output))


def format_rows() -> list[Row]:
    from fairsynth.data.preprocess import load_rgb

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        made = hostile.good_formats(root)
        (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n}) + "\n" for n in made.values()))
        result = runner.invoke(app, ["validate", "--reader", "imagefolder", str(root)])
        for what, name in made.items():
            image = load_rgb(root / name)
            expected = (64, 96) if what == "EXIF-rotated JPEG" else (80, 80)
            ok = result.exit_code == 0 and image.mode == "RGB" and image.size == expected
            note = next((line.split("]", 1)[1].strip() for line in result.output.splitlines()
                         if name in line and "[converted]" in line), "read as RGB")
            how = "turned upright by its EXIF orientation" if "rotated" in what else note
            rows.append((what, 1, int(ok), f"validate exit 0; {how}" if ok else _short(result.output)))
    return rows


HOLDER = (
    "import sys, time\nfrom fairsynth.lock import acquire\n"
    "acquire(sys.argv[1], command='fairsynth run recipe.yaml'); print('held', flush=True); time.sleep(120)\n"
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def lock_rows() -> list[Row]:
    from fairsynth.lock import hold

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "study"
        recipe = Path(folder) / "r.yaml"
        recipe.write_text(json.dumps({"workdir": str(study), "data": {"reader": "imagefolder", "path": folder}}))
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(study)], stdout=subprocess.PIPE, text=True, env=_env())
        holder.stdout.readline()
        commands = [["prepare", "--config"], ["train", "--config"], ["generate", "--config"], ["filter", "--config"],
                    ["evaluate", "--config"], ["downstream", "compare", "--config"], ["downstream", "curve", "--config"],
                    ["downstream", "ablate", "--config"], ["run"]]
        codes = [runner.invoke(app, [*command, str(recipe)]) for command in commands]
        codes.append(runner.invoke(app, ["report", str(study)]))
        ok = sum(r.exit_code == EXIT_LOCKED and f"pid {holder.pid}" in r.output for r in codes)
        rows.append(("second writer on a busy study (prepare, train, generate, filter, evaluate, downstream compare, "
                     "curve and ablate, run, report)", len(codes), ok,
                     f"stops, exit {EXIT_LOCKED}, naming the holder's pid, host and command"))
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        said: list[str] = []
        with hold(study, log=said.append):
            pass
        rows.append(("lock of a writer killed with SIGKILL", 1, int(bool(said) and f"pid {holder.pid}" in said[0]),
                     "taken over by the next writer, which says whose it was"))
        racer = (
            "import sys, time\nfrom fairsynth.lock import acquire, StudyLocked\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "try:\n    acquire(sys.argv[1]); print('won', flush=True); time.sleep(2)\n"
            "except StudyLocked:\n    print('lost', flush=True)\n"
        )
        start = time.time() + 2.0
        racers = [subprocess.Popen([sys.executable, "-c", racer, str(Path(folder) / "race"), str(start)],
                                   stdout=subprocess.PIPE, text=True, env=_env()) for _ in range(4)]
        outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in racers)
        rows.append(("four writers starting at the same instant", 4, 4 if outcomes == ["lost"] * 3 + ["won"] else 0,
                     "one wins, three stop (flock)"))
    return rows


def fuzz_rows(examples: int) -> list[Row]:
    from tests.data.fuzzing import TARGETS, describe_tally, fuzz

    rows = []
    for target, (_, _, what) in TARGETS.items():
        name = f"fuzz: {target} reader ({what})" if target != "recipe" else f"fuzz: recipe loader ({what})"
        try:
            tally = fuzz(target, examples)
        except Exception as err:  # noqa: BLE001 - a broken property is a row of the table, not a crash of it
            from tests.data import fuzzing

            done = fuzzing.TALLIES[-1].tried
            rows.append((name, done + 1, done, f"FAILED on a case: {_short(str(err), 200)}"))
            continue
        rows.append((name, tally.tried, tally.tried, describe_tally(tally)))
    return rows


def rows(fuzz_examples: int = 100) -> list[Row]:
    """Every row of the table (the sections in order)."""
    return file_rows() + format_rows() + lock_rows() + fuzz_rows(fuzz_examples)


def render(table: list[Row]) -> str:
    lines = ["| case | tried | handled | how |", "|---|---:|---:|---|"]
    lines += [f"| {case} | {tried} | {handled} | {how.replace('|', '/')} |" for case, tried, handled, how in table]
    tried = sum(r[1] for r in table)
    handled = sum(r[2] for r in table)
    lines.append(f"| **all** | **{tried}** | **{handled}** | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=100, help="Fuzz cases per reader and for the recipe loader.")
    args = parser.parse_args()
    started = time.perf_counter()
    table = rows(args.fuzz)
    print(render(table))
    print(f"\n{time.perf_counter() - started:.0f} s; Pillow {__import__('PIL').__version__}, "
          f"Python {sys.version.split()[0]}")
    if any(tried != handled for _, tried, handled, _ in table):
        sys.exit(1)


if __name__ == "__main__":
    main()
