"""Tally the headline verdicts of the demo reruns in a candidate's folder (rerun.sh's
*-rerun-K.txt files: each is ``hdetach demo``'s printed output): per rerun, the headline
(transfer accuracy averaged over T), the verdict at the training T and the per-T transfer
verdicts, shortened, and the wall time; then how often each verdict came out.
Usage: python results/demo-design/summarize.py results/demo-design/CANDIDATE"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path


def short(line: str) -> str:
    """A verdict line in a few words: who is better (or within noise), and where."""
    if line.startswith(("Within noise", "Transfer: within noise")):
        return "within noise"
    if line.startswith("Transfer, each T judged on its own"):
        return line.split(": ", 1)[1].rstrip(".")
    found = re.match(r"(Transfer: )?(.+?) (is better|transfers better)", line)
    return f"{found.group(2)} better" if found else line[:60]


def main(folder: Path) -> None:
    keys = ("headline", "own T", "transfer")
    rows, tally = [], {key: collections.Counter() for key in keys}
    for path in sorted(folder.glob("*-rerun-*.txt"), key=lambda p: int(p.stem.split("-")[-1])):
        lines = path.read_text().splitlines()
        own = next(line for line in lines if "mean best val acc at T=" in line)
        transfer = next(line for line in lines if line.startswith("Transfer"))
        # the headline's verdict is the line after its title (absent before the demo had one)
        titles = [i for i, line in enumerate(lines) if line.startswith("Headline")]
        headline = lines[titles[0] + 1] if titles else "-"
        wall = next(line for line in lines if line.startswith("wall seconds:"))
        seeds = re.search(r"seeds (\d+-\d+)", "\n".join(lines)).group(1)
        verdicts = {"headline": short(headline), "own T": short(own), "transfer": short(transfer)}
        for key, said in verdicts.items():
            tally[key][said] += 1
        minutes = int(wall.split(":")[1]) / 60
        rows.append(
            f"| {path.stem} | {seeds} | "
            + " | ".join(verdicts[key] for key in keys)
            + f" | {minutes:.1f} |"
        )
    columns = "headline: mean transfer | at the training T | transfer, per T"
    print(f"| rerun | seeds | {columns} | wall minutes |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    for key, counts in tally.items():
        shown = ", ".join(f"{said}: {n} of {sum(counts.values())}" for said, n in counts.items())
        print(f"\n{key}: {shown}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
