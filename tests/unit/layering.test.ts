// Where a file sits says which runtime's APIs it may use (docs/architecture.md). These checks read
// the real import graph, transitively, so a core file cannot reach `electron` through a helper.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(__dirname, '../..');
const SRC = join(ROOT, 'src');
const TOOLS = join(ROOT, 'tools');

/** Is `file` inside src/<folder>/ ? */
function under(file: string, folder: string): boolean {
  return relative(SRC, file).startsWith(folder + sep);
}

/** Is `file` one of the research tools (top-level tools/)? */
function inTools(file: string): boolean {
  return relative(TOOLS, file).split(sep)[0] !== '..';
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : /\.(ts|svelte)$/.test(name) ? [path] : [];
  });
}

const IMPORT_RE = /(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\s*\(\s*['"]([^'"]+)['"]\s*\)|require\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s+['"]([^'"]+)['"]/gm;

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(IMPORT_RE)].map((m) => m[1] ?? m[2] ?? m[3] ?? m[4]!);
}

function resolveLocal(from: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null;
  const base = resolve(dirname(from), spec);
  for (const candidate of [base, `${base}.ts`, join(base, 'index.ts'), base.replace(/\.js$/, '.ts')]) {
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // try the next spelling
    }
  }
  return null;
}

/** Every file reachable from `entry` with the bare modules it imports. */
function closure(entries: string[]): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const stack = [...entries];
  while (stack.length) {
    const file = stack.pop()!;
    if (seen.has(file)) continue;
    const specs = importsOf(file);
    seen.set(
      file,
      specs.filter((s) => !s.startsWith('.')),
    );
    for (const s of specs) {
      const local = resolveLocal(file, s);
      if (local) stack.push(local);
    }
  }
  return seen;
}

function violations(entries: string[], forbidden: (spec: string, file: string) => boolean): string[] {
  const out: string[] = [];
  for (const [file, specs] of closure(entries)) {
    for (const s of specs) if (forbidden(s, file)) out.push(`${relative(ROOT, file)} imports ${s}`);
  }
  for (const file of closure(entries).keys()) if (forbidden('', file)) out.push(`reaches ${relative(ROOT, file)}`);
  return out;
}

describe('layering', () => {
  it('the core never imports electron, directly or transitively', () => {
    const core = files(join(SRC, 'main/core'));
    expect(core.length).toBeGreaterThan(5);
    expect(violations(core, (s) => s === 'electron' || s.startsWith('electron/'))).toEqual([]);
    // ...nor any host code, nor the research tools.
    expect(violations(core, (_s, f) => under(f, join('main', 'hosts')))).toEqual([]);
    expect(violations(core, (_s, f) => inTools(f))).toEqual([]);
  });

  it('the studio server, the command line and the research tools never import electron', () => {
    const plainNode = [...files(join(SRC, 'main/hosts/server')), ...files(join(SRC, 'main/hosts/cli')), ...files(TOOLS)];
    expect(files(TOOLS).length).toBeGreaterThan(5);
    expect(violations(plainNode, (s) => s === 'electron' || s.startsWith('electron/'))).toEqual([]);
  });

  it('the research tools use the core but no host; only the command line reaches them', () => {
    expect(violations(files(TOOLS), (_s, f) => under(f, join('main', 'hosts')))).toEqual([]);
    const appHosts = [...files(join(SRC, 'main/hosts/server')), ...files(join(SRC, 'main/hosts/electron'))];
    expect(violations(appHosts, (_s, f) => inTools(f))).toEqual([]);
    // The command line does reach them (the check sees through the entry).
    expect(violations(files(join(SRC, 'main/hosts/cli')), (_s, f) => inTools(f))).not.toEqual([]);
  });

  it('shared code is runtime-neutral: no Node built-ins, no packages', () => {
    const shared = files(join(SRC, 'shared'));
    expect(violations(shared, (s) => s !== '')).toEqual([]);
  });

  it('the renderer reaches neither main-process code nor Node', () => {
    const renderer = files(join(SRC, 'renderer'));
    expect(renderer.length).toBeGreaterThan(0);
    const bad = violations(renderer, (s, f) => s.startsWith('node:') || s === 'electron' || s === 'better-sqlite3' || s === 'sharp' || under(f, 'main') || under(f, 'preload'));
    expect(bad).toEqual([]);
  });

  it('the preload imports only electron and shared types', () => {
    const preload = files(join(SRC, 'preload'));
    expect(violations(preload, (s, f) => (s !== '' && s !== 'electron') || under(f, 'main'))).toEqual([]);
  });

  it('catches a violation when one exists (the check itself works)', () => {
    const mainHost = join(SRC, 'main/hosts/electron/main.ts');
    expect(violations([mainHost], (s) => s === 'electron')).not.toEqual([]);
  });
});
