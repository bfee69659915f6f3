// PNG tEXt chunks (ISO/IEC 15948 §11.3.4.3): the recipe travels inside the image file. sharp keeps
// EXIF/ICC but not arbitrary text chunks, so they are spliced in here, before IEND.
const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of buf) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** One PNG chunk: length, type, data, CRC-32 over type and data. */
export function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([head, body, crc]);
}

/**
 * Adds one tEXt chunk per entry. Keywords are 1–79 Latin-1 characters; text is written as UTF-8
 * bytes (what A1111, ComfyUI and exiftool read back for "parameters").
 */
export function addPngText(png: Buffer, entries: Record<string, string>): Buffer {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG');
  const iend = png.lastIndexOf(Buffer.from('IEND', 'latin1')) - 4;
  if (iend < 8) throw new Error('PNG has no IEND chunk');
  const chunks = Object.entries(entries).map(([k, v]) => {
    if (!/^[\x20-\x7e]{1,79}$/.test(k)) throw new Error(`bad PNG text keyword "${k}"`);
    return pngChunk('tEXt', Buffer.concat([Buffer.from(k, 'latin1'), Buffer.from([0]), Buffer.from(v, 'utf8')]));
  });
  return Buffer.concat([png.subarray(0, iend), ...chunks, png.subarray(iend)]);
}

/** Every tEXt chunk of a PNG, keyword → text (checks each chunk's CRC). */
export function readPngText(png: Buffer): Record<string, string> {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG');
  const out: Record<string, string> = {};
  for (let p = 8; p + 12 <= png.length;) {
    const len = png.readUInt32BE(p);
    const type = png.toString('latin1', p + 4, p + 8);
    const body = png.subarray(p + 4, p + 8 + len);
    if (png.readUInt32BE(p + 8 + len) !== crc32(body)) throw new Error(`PNG chunk ${type} has a bad CRC`);
    if (type === 'tEXt') {
      const data = png.subarray(p + 8, p + 8 + len);
      const zero = data.indexOf(0);
      out[data.toString('latin1', 0, zero)] = data.subarray(zero + 1).toString('utf8');
    }
    if (type === 'IEND') break;
    p += 12 + len;
  }
  return out;
}
