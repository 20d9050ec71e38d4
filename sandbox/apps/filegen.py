"""Small, dependency-free writers for the ``files`` app's exports: a one-page PDF of text lines and a PNG
bar chart whose title and data are also stored as PNG ``tEXt`` chunks (so a detector can check them).

>>> pdf_bytes("Invoice INV-1001", ["Customer: Acme"]).startswith(b"%PDF-1.4")
True
>>> b"Orders by status" in png_chart("Orders by status", {"Paid": 3, "Open": 1})
True
"""

from __future__ import annotations

import struct
import zlib


def _pdf_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1", "replace").decode("latin-1")


def pdf_bytes(title: str, lines: list[str]) -> bytes:
    """A valid single-page PDF (Helvetica, uncompressed content stream, so its text is searchable)."""
    ops = [f"BT /F1 16 Tf 56 790 Td ({_pdf_text(title)}) Tj ET", "BT /F1 11 Tf 56 760 Td 15 TL"]
    ops += [f"({_pdf_text(line)}) Tj T*" for line in lines[:46]]
    ops.append("ET")
    content = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info << /Title (%s) >> >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, _pdf_text(title).encode("latin-1"), xref,
    )
    return bytes(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_chart(title: str, data: dict[str, int], width: int = 480, height: int = 240) -> bytes:
    """An RGB PNG bar chart of ``data`` (one bar per key, left to right); ``tEXt`` chunks "Title" and
    "Data" (``key=value;...``) carry what it shows."""
    white, axis, bar = b"\xff\xff\xff", b"\x33\x41\x55", b"\x1d\x4e\xd8"
    top = max(data.values(), default=0) or 1
    n = max(1, len(data))
    slot = (width - 40) // n
    heights = [int((height - 40) * v / top) for v in data.values()]
    rows = []
    for y in range(height):
        from_bottom = height - 20 - y
        row = bytearray(white * width)
        if from_bottom == 0:
            row[20 * 3 : (width - 20) * 3] = axis * (width - 40)
        elif from_bottom > 0:
            for i, h in enumerate(heights):
                if from_bottom <= h:
                    x0 = 20 + i * slot + slot // 6
                    x1 = 20 + (i + 1) * slot - slot // 6
                    row[x0 * 3 : x1 * 3] = bar * (x1 - x0)
        rows.append(b"\x00" + bytes(row))
    text = ";".join(f"{k}={v}" for k, v in data.items())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _chunk(b"tEXt", b"Title\x00" + title.encode("latin-1", "replace"))
        + _chunk(b"tEXt", b"Data\x00" + text.encode("latin-1", "replace"))
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + _chunk(b"IEND", b"")
    )
