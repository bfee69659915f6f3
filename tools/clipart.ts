// The built-in model's training data, reproducibly, from Debian's openclipart-png (public domain):
//   1. list every PNG; the first folder is the top-level category (22 of them)
//   2. caption = file-name words (trailing numbers and the author's name removed — authors come from
//      resources/data/openclipart-authors.tsv, made from openclipart-svg by `tools clipart-authors`)
//      + sub-folder words + category words, lower-case, no digits, no repeated words
//   3. pixels: alpha flattened onto white, trimmed to the drawing, padded to a square with a white
//      margin, resized to R×R (lanczos3)
//   4. near-duplicates removed: 64-bit dHash within Hamming distance 4 *and* mean |Δ| of a 16×16 RGB
//      thumbnail under 6/255 (colour variants of one drawing are kept; re-exports are dropped)
//   5. a fixed held-out split, stratified by category: per category the 6 % whose sha256(path) sort
//      first (≥ 1 image), so the split never depends on file-system order or on R
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, join, relative, sep } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { writeSafetensors } from '../src/main/core/io/safetensors';

export const HELD_OUT_FRACTION = 0.06;
const WHITE = { r: 255, g: 255, b: 255 };

export interface ClipartItem {
  path: string;
  category: string;
  caption: string;
  split: 'train' | 'heldout';
}

function listPngs(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .flatMap((e) => (e.isDirectory() ? listPngs(join(dir, e.name)) : e.isFile() && e.name.endsWith('.png') ? [join(dir, e.name)] : []));
}

const words = (text: string) =>
  text
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);

// "time1" → "time": series numbers glued to a word are not part of it.
const nameTokens = (fileName: string) =>
  words(fileName.replace(/\.png$/i, ''))
    .map((t) => t.replace(/(?<=[a-z])\d+$/, ''))
    .filter((t) => !/^\d+$/.test(t));

/** Same word, allowing the misspellings authors' metadata has (Konsatantin/konstantin). */
const sameWord = (a: string, b: string) => a === b || (a.length >= 4 && b.length >= 4 && a.slice(0, 4) === b.slice(0, 4));

/** File-name words with the trailing number and the (possibly truncated) author suffix removed. */
export function titleWords(fileName: string, author: string | undefined, aliases: ReadonlySet<string> = new Set()): string[] {
  let tokens = nameTokens(fileName);
  // A user name the author signs files with (Gerald G. → "ganson"), at the very end.
  while (tokens.length > 1 && aliases.has(tokens[tokens.length - 1]!.replace(/\d+$/, ''))) tokens = tokens.slice(0, -1);
  const authorTokens = author ? words(author) : [];
  // The longest suffix of the name that spells consecutive words of the author's name (from any
  // of them: "fra" for Architetto Francesco…), the last one possibly cut short (names are
  // truncated to ~24 characters before the number).
  const spells = (suffix: string[], from: number) =>
    suffix.every((t, i) => {
      const a = authorTokens[from + i]!;
      return i === suffix.length - 1 ? a.startsWith(t) || sameWord(t, a) : sameWord(t, a);
    });
  for (let start = 1; start < tokens.length && authorTokens.length; start++) {
    const suffix = tokens.slice(start);
    for (let from = 0; from + suffix.length <= authorTokens.length; from++) if (spells(suffix, from)) return tokens.slice(0, start);
  }
  return tokens;
}

/**
 * Signature words: a last file-name word that one author uses on ≥ 3 drawings with different
 * first words is that author's user name, not part of a title. Unknown-author files lose it too.
 */
export function authorAliases(authors: ReadonlyMap<string, string>): Set<string> {
  const byAuthor = new Map<string, Map<string, Set<string>>>();
  for (const [name, author] of authors) {
    const t = nameTokens(name);
    if (t.length < 2) continue;
    const last = t[t.length - 1]!.replace(/\d+$/, '');
    if (last.length < 3) continue;
    const m = byAuthor.get(author) ?? new Map<string, Set<string>>();
    m.set(last, (m.get(last) ?? new Set()).add(t[0]!));
    byAuthor.set(author, m);
  }
  const aliases = new Set<string>();
  for (const [author, lasts] of byAuthor) {
    const own = words(author);
    for (const [last, firsts] of lasts) if (firsts.size >= 3 && !own.some((w) => sameWord(w, last))) aliases.add(last);
  }
  return aliases;
}

export function cleanCaption(parts: string[][]): string {
  const seen = new Set<string>();
  const groups = parts.map((group) =>
    group.filter((w) => {
      if (w.length < 2 || /\d/.test(w) || seen.has(w)) return false;
      seen.add(w);
      return true;
    }),
  );
  return groups
    .filter((g) => g.length)
    .map((g) => g.join(' '))
    .join(', ');
}

export function captionFor(root: string, file: string, authors: Map<string, string>, aliases: ReadonlySet<string>): { category: string; caption: string } {
  const parts = relative(root, file).split(sep);
  const category = parts[0]!;
  const sub = parts.slice(1, -1).flatMap(words);
  const title = titleWords(basename(file), authors.get(basename(file, '.png')), aliases);
  return { category, caption: cleanCaption([title, sub, words(category.replace(/_/g, ' '))]) };
}

export function readAuthors(file: string): Map<string, string> {
  if (!existsSync(file)) return new Map();
  return new Map(
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split('\t') as [string, string]),
  );
}

/** basename → author, from openclipart-svg's <dc:creator> metadata. */
export function extractAuthors(svgRoot: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.svg')) {
        const m = /<dc:creator>\s*<cc:Agent[^>]*>\s*<dc:title>([^<]*)<\/dc:title>/.exec(readFileSync(p, 'utf8'));
        const author = m?.[1]?.trim();
        if (author) out.set(basename(e.name, '.svg'), author.replace(/\s+/g, ' '));
      }
    }
  };
  walk(svgRoot);
  return new Map([...out].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
}

async function render(file: string, resolution: number): Promise<Buffer> {
  const margin = Math.max(1, Math.round(resolution / 32));
  const inner = resolution - 2 * margin;
  const base = () => sharp(file, { limitInputPixels: 100_000_000 }).flatten({ background: WHITE });
  const finish = (s: Sharp) =>
    s
      .resize(inner, inner, { fit: 'contain', background: WHITE, kernel: 'lanczos3' })
      .extend({ top: margin, bottom: margin, left: margin, right: margin, background: WHITE })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer();
  try {
    // trim() finds the drawing's bounding box; it throws on a blank image.
    return await finish(sharp(await base().trim({ threshold: 12 }).png().toBuffer()));
  } catch {
    return finish(base());
  }
}

async function fingerprint(rgb: Buffer, resolution: number): Promise<{ hash: [number, number]; small: Buffer }> {
  const raw = { raw: { width: resolution, height: resolution, channels: 3 as const } };
  const grey = await sharp(rgb, raw).greyscale().resize(9, 8, { fit: 'fill' }).raw().toBuffer();
  let hi = 0;
  let lo = 0;
  for (let y = 0; y < 8; y++)
    for (let x = 0; x < 8; x++) {
      const bit = grey[y * 9 + x]! > grey[y * 9 + x + 1]! ? 1 : 0;
      const i = y * 8 + x;
      if (i < 32) lo |= bit << i;
      else hi |= bit << (i - 32);
    }
  const small = await sharp(rgb, raw).resize(16, 16, { fit: 'fill' }).raw().toBuffer();
  return { hash: [hi >>> 0, lo >>> 0], small };
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

function meanAbsDiff(a: Buffer, b: Buffer): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

export interface ClipartOptions {
  root: string;
  authorsFile: string;
  resolution: number;
  outDir: string;
  limit?: number;
  log?: (line: string) => void;
}

export async function buildClipartDataset(opts: ClipartOptions): Promise<Record<string, unknown>> {
  const log = opts.log ?? (() => {});
  if (!existsSync(opts.root)) throw new Error(`${opts.root} not found: install Debian's openclipart-png (apt-get install openclipart-png).`);
  const authors = readAuthors(opts.authorsFile);
  const aliases = authorAliases(authors);
  let files = listPngs(opts.root);
  if (opts.limit) files = files.slice(0, opts.limit);
  const R = opts.resolution;
  const kept: { item: Omit<ClipartItem, 'split'>; rgb: Buffer; hash: [number, number]; small: Buffer; key: string }[] = [];
  let unreadable = 0;
  let duplicates = 0;
  for (const [n, file] of files.entries()) {
    if (n % 500 === 0) log(`${n}/${files.length}`);
    let rgb: Buffer;
    try {
      rgb = await render(file, R);
    } catch {
      unreadable++;
      continue;
    }
    const fp = await fingerprint(rgb, R);
    const dup = kept.some((k) => popcount(k.hash[0] ^ fp.hash[0]) + popcount(k.hash[1] ^ fp.hash[1]) <= 4 && meanAbsDiff(k.small, fp.small) < 6);
    if (dup) {
      duplicates++;
      continue;
    }
    const rel = relative(opts.root, file);
    kept.push({ item: { path: rel, ...captionFor(opts.root, file, authors, aliases) }, rgb, ...fp, key: createHash('sha256').update(rel).digest('hex') });
  }
  // Stratified, order-independent held-out split.
  const heldOut = new Set<string>();
  const byCategory = new Map<string, typeof kept>();
  for (const k of kept) byCategory.set(k.item.category, [...(byCategory.get(k.item.category) ?? []), k]);
  for (const group of byCategory.values()) {
    const n = Math.max(1, Math.ceil(group.length * HELD_OUT_FRACTION));
    for (const k of [...group].sort((a, b) => (a.key < b.key ? -1 : 1)).slice(0, n)) heldOut.add(k.item.path);
  }
  mkdirSync(opts.outDir, { recursive: true });
  const items: ClipartItem[] = kept.map((k) => ({ ...k.item, split: heldOut.has(k.item.path) ? 'heldout' : 'train' }));
  const summary: Record<string, unknown> = { source: opts.root, resolution: R, files: files.length, unreadable, duplicates, kept: kept.length };
  for (const split of ['train', 'heldout'] as const) {
    const subset = kept.filter((k) => (split === 'heldout') === heldOut.has(k.item.path));
    const data = Buffer.concat(subset.map((k) => k.rgb));
    const out = join(opts.outDir, `${split}.safetensors`);
    writeSafetensors(out, [['images', { dtype: 'U8', shape: [subset.length, R, R, 3], data }]], {
      format: 'shira-studio.packed-dataset.v1',
      source: 'Debian openclipart-png (public domain)',
      captions: JSON.stringify(subset.map((k) => k.item.caption)),
      categories: JSON.stringify(subset.map((k) => k.item.category)),
      repeats: JSON.stringify(subset.map(() => 1)),
    });
    summary[split] = { images: subset.length, bytes: statSync(out).size, file: out };
  }
  summary.categories = Object.fromEntries([...byCategory].map(([c, g]) => [c, g.length]));
  writeFileSync(join(opts.outDir, 'manifest.json'), JSON.stringify({ ...summary, items }, null, 1));
  return summary;
}
