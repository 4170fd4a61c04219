"""The training loss log, ``losses.csv``: one row per iteration, appended as training goes.

A power cut or a full disk can leave the file damaged: a NUL-filled tail, an
unterminated last row, a half-written number, stray bytes. Reading never fails on
content: damaged rows are dropped with a one-line note and the file is rewritten
clean before anything is appended, so a damaged row can never merge with a new one.
Rows a resumed run will redo are moved to a side file first, never simply deleted.
"""
import csv
import io
import os
import sys

from adain_np.cli import atomic_path

COLUMNS = ("iteration", "lr", "loss_content", "loss_style", "loss", "seconds")
MAX_LOG_BYTES = 1 << 30  # 160k iterations take ~15 MB; a bigger file is not ours


def _valid(fields):
    """A row of the right width whose iteration is a positive int and the rest numbers."""
    if len(fields) != len(COLUMNS):
        return False
    try:
        if int(fields[0]) < 1:
            return False
        for text in fields[1:]:
            float(text)
    except ValueError:
        return False
    return True


def parse(data):
    """(rows as {column: text}, number of damaged lines) from the bytes of a log."""
    lines = data.split(b"\n")
    unterminated = lines.pop()  # b"" when the file ends with a newline
    damaged = 1 if unterminated else 0  # a half-written row, or the NULs a power cut leaves
    rows = []
    for number, raw in enumerate(lines):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            damaged += 1
            continue
        if "\0" in text:
            damaged += 1
            continue
        fields = next(csv.reader(io.StringIO(text)), [])
        if number == 0 and tuple(fields) == COLUMNS:
            continue  # the header
        if not fields:
            continue
        if _valid(fields):
            rows.append(dict(zip(COLUMNS, fields)))
        else:
            damaged += 1
    return rows, damaged


class LossLog:
    """One CSV row per iteration, appended and flushed as training goes."""

    COLUMNS = COLUMNS

    def __init__(self, path):
        self.path = path

    def start(self, resume_iteration=None):
        """A fresh run keeps an old log under a new name; a resumed one keeps its rows up to
        resume_iteration and moves the later ones (they are redone) to a side file."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if not os.path.exists(self.path):
            self._write_rows(self.path, [])
        elif resume_iteration is None:
            kept = self._free_name()
            os.replace(self.path, kept)
            print(f"note: the previous {self.path} is kept as {kept}", file=sys.stderr)
            self._write_rows(self.path, [])
        else:
            rows = self.read(note=True)
            kept = [row for row in rows if int(row["iteration"]) <= resume_iteration]
            later = [row for row in rows if int(row["iteration"]) > resume_iteration]
            if later:
                side = self._free_name()
                self._write_rows(side, later)  # first: a Ctrl-C from here on loses nothing
                print(f"note: {len(later)} rows after iteration {resume_iteration} of"
                      f" {self.path} are moved to {side}: they are redone", file=sys.stderr)
            self._write_rows(self.path, kept)  # always: a clean file to append to

    def _free_name(self):
        stem, ext = os.path.splitext(self.path)
        number = 1
        while os.path.exists(f"{stem}.{number}{ext}"):
            number += 1
        return f"{stem}.{number}{ext}"

    @staticmethod
    def _write_rows(path, rows):
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as file:
                writer = csv.DictWriter(file, COLUMNS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)

    def append(self, **row):
        with open(self.path, "a", newline="") as file:
            # repr: the shortest text that reads back as the same float, so logs compare exactly
            file.write(",".join(repr(row[name]) for name in COLUMNS) + "\n")

    def read(self, note=False):
        """The valid rows ({column: text}); damaged ones are skipped (noted if `note`)."""
        with open(self.path, "rb") as file:
            data = file.read(MAX_LOG_BYTES)
        rows, damaged = parse(data)
        if damaged and note:
            print(f"note: {self.path}: skipped {damaged} damaged line"
                  f"{'s' if damaged != 1 else ''} (an interrupted write?)", file=sys.stderr)
        return rows
