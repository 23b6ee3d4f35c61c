"""What a DICOM decoder will allocate, checked on the bytes it will read before it reads them.

The header's rows × columns is only a claim: pydicom inflates a deflated data set whole, and every pixel
decoder sizes its buffers from the code stream it is given (JPEG SOF, JPEG 2000 SIZ, RLE runs), not from
the header. So a few kilobytes could make a worker allocate gigabytes. Here:
* the file meta group is walked element by element and must have defined lengths (PS3.10), so that it is
  parsed without touching the data set; a deflated data set is inflated by us, under a cap, and handed to
  pydicom already inflated;
* the first frame's code stream (the only frame ever decoded) must declare exactly the header's image:
  JPEG's SOF, JPEG 2000's SIZ, and RLE segments that inflate to no more than one plane of the frame.
"""

from __future__ import annotations

import io
import warnings
import zlib

from cxr.errors import CorruptImage, InputError

# pydicom's deflated transfer syntaxes.
DEFLATED_SYNTAXES = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}
INFLATE_CHUNK = 1024 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}

JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57"}
JPEG_SYNTAXES |= {"1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201"}
J2K_SYNTAXES |= {"1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
RLE_SYNTAX = "1.2.840.10008.1.2.5"
# Start-of-frame markers (JPEG SOF0-SOF15 but DHT, JPG and DAC; JPEG-LS SOF55) and the hierarchical DHP.
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
DHP, SOS, SOI = 0xDE, 0xDA, 0xD8
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}
J2K_START = b"\xff\x4f\xff\x51"  # SOC, then SIZ, which must follow it
RLE_HEADER = 64  # bytes: the segment count and 15 offsets


def meta_end(data: bytes) -> int:
    """Where the file meta group (0002,xxxx; always explicit VR little endian, defined lengths) ends,
    walked element by element so that a missing or false group length cannot hide the rest of the file."""
    position = 132
    while len(data) >= position + 8 and int.from_bytes(data[position : position + 2], "little") == 0x0002:
        vr = data[position + 4 : position + 6]
        if vr in LONG_VRS:
            length = int.from_bytes(data[position + 8 : position + 12], "little")
            position += 12
        else:
            length = int.from_bytes(data[position + 6 : position + 8], "little")
            position += 8
        if length == UNDEFINED_LENGTH or position + length > len(data):
            raise CorruptImage("This DICOM file's header (its file meta information) is damaged.")
        position += length
    return position


def readable_file(data: bytes, max_inflated: int) -> bytes:
    """The file as pydicom may read it: unchanged, or with a deflated data set inflated (at most
    `max_inflated` bytes, else 413) behind a file meta that says explicit VR little endian."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian

    end = meta_end(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = pydicom.dcmread(io.BytesIO(data[:end]), force=True).file_meta  # the meta group alone
    if str(meta.get("TransferSyntaxUID", "")) not in DEFLATED_SYNTAXES:
        return data
    size = inflated_size(data[end:], max_inflated)
    inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[end:], size)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header = DicomBytesIO()
    write_file_meta_info(header, meta, enforce_standard=False)
    return data[:128] + b"DICM" + header.getvalue() + inflated


def inflated_size(deflated: bytes, limit: int) -> int:
    """The size `deflated` inflates to, measured in chunks that are thrown away; 413 past the cap."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, pending = 0, deflated
    while pending and not inflater.eof:
        size += len(inflater.decompress(pending, INFLATE_CHUNK))
        pending = inflater.unconsumed_tail
        if size > limit:
            raise InputError(
                f"This compressed DICOM file would grow to more than {limit // 1_000_000} MB when "
                "decompressed, more than any chest radiograph needs; it was not decoded.",
                status=413,
            )
    return size


def first_frame(ds) -> bytes:
    """The encoded bytes of frame 0, exactly as pydicom's decoder will take them for `index=0`."""
    from pydicom.encaps import get_frame

    offsets, lengths = ds.get("ExtendedOffsetTable"), ds.get("ExtendedOffsetTableLengths")
    extended = (offsets.value, lengths.value) if offsets is not None and lengths is not None else None
    return get_frame(ds.PixelData, 0, number_of_frames=1, extended_offsets=extended)


def check_code_stream(ds, syntax: str, rows: int, columns: int, samples: int, bits: int) -> None:
    """Refuse (400) a compressed first frame whose code stream holds another image than the header's."""
    if syntax in JPEG_SYNTAXES:
        declared = _jpeg_frame(first_frame(ds))
    elif syntax in J2K_SYNTAXES:
        declared = _j2k_frame(first_frame(ds))
    elif syntax == RLE_SYNTAX:
        _check_rle(first_frame(ds), rows * columns, samples * max(1, bits // 8))
        return
    else:
        return  # native (uncompressed) pixels: pydicom reads the header's frame size, no more
    if declared != (rows, columns, samples):
        raise CorruptImage(
            f"This DICOM file's compressed image is {declared[1]}×{declared[0]} pixels with {declared[2]} "
            f"sample(s), but its header says {columns}×{rows} with {samples}; it was not decoded."
        )


def _damaged(what: str) -> CorruptImage:
    return CorruptImage(f"This DICOM file's {what} is truncated or damaged; it was not decoded.")


def _jpeg_frame(stream: bytes) -> tuple[int, int, int]:
    """(rows, columns, components) of the first frame header of a JPEG or JPEG-LS stream, walking its
    marker segments from SOI (a hierarchical stream, whose DHP sizes differ per frame, is refused)."""
    if stream[:2] != b"\xff\xd8":
        raise _damaged("JPEG image")
    position = 2
    while position + 4 <= len(stream):
        if stream[position] != 0xFF:
            raise _damaged("JPEG image")
        marker = stream[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in STANDALONE_MARKERS or marker == SOI:
            position += 2
            continue
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        if marker in SOF_MARKERS and length >= 8 and position + 10 <= len(stream):
            segment = stream[position + 4 : position + 10]
            return int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), segment[5]
        if marker in (SOS, DHP) or length < 2:
            break
        position += 2 + length
    raise _damaged("JPEG image (no frame header before its data)")


def _j2k_frame(stream: bytes) -> tuple[int, int, int]:
    """(rows, columns, components) from a JPEG 2000 code stream's SIZ segment. DICOM holds the bare code
    stream (PS3.5 8.2.4: no JP2 file header), which must begin with SOC and SIZ."""
    if not stream.startswith(J2K_START) or len(stream) < 42:
        raise _damaged("JPEG 2000 code stream")

    def number(offset: int, size: int = 4) -> int:
        return int.from_bytes(stream[offset : offset + size], "big")

    # After SOC and SIZ's marker: Lsiz (2), Rsiz (2), Xsiz, Ysiz, XOsiz, YOsiz (4 each), ... Csiz (2) at 40.
    width, height = number(8) - number(16), number(12) - number(20)
    if width <= 0 or height <= 0:
        raise _damaged("JPEG 2000 code stream")
    return height, width, number(40, 2)


def _check_rle(frame: bytes, plane: int, segments: int) -> None:
    """Each RLE segment (PS3.5 G.3) must inflate to at most one plane (`plane` bytes, a padding run
    allowed): its runs are walked, counting without writing, up to that limit."""
    if len(frame) < RLE_HEADER:
        raise _damaged("RLE image")
    count = int.from_bytes(frame[:4], "little")
    if count != segments:
        raise CorruptImage(f"This DICOM file's RLE image has {count} segments where its header needs {segments}.")
    offsets = [int.from_bytes(frame[4 + 4 * n : 8 + 4 * n], "little") for n in range(count)] + [len(frame)]
    limit = plane + 128
    for start, stop in zip(offsets, offsets[1:], strict=False):
        if not RLE_HEADER <= start <= stop <= len(frame):
            raise _damaged("RLE image")
        if _rle_decoded_length(frame, start, stop, limit) > limit:
            raise CorruptImage(
                "This DICOM file's RLE image holds more data than its header's frame; it was not decoded."
            )


def _rle_decoded_length(frame: bytes, position: int, stop: int, limit: int) -> int:
    """How many bytes the PackBits runs in frame[position:stop] produce, as pydicom decodes them (a
    literal run cut short by the end gives what is left), counted until past `limit`."""
    produced = 0
    while position < stop and produced <= limit:
        header = frame[position]
        if header < 128:  # a literal run of header + 1 bytes
            produced += min(header + 1, stop - position - 1)
            position += header + 2
        elif header > 128:  # the next byte, 257 - header times
            produced += (257 - header) if position + 1 < stop else 0
            position += 2
        else:  # 128: no operation
            position += 1
    return produced
