#!/usr/bin/env node
// better-sqlite3 for Electron's ABI, kept apart from the Node build in node_modules.
//
// better-sqlite3 is built against V8's ABI (NODE_MODULE_VERSION): the copy npm compiled for Node (the
// studio server, the tests, the tools) cannot load in Electron's core process, and rebuilding it in
// place for Electron would break Node. So the Electron copy lives in electron-native/abi<N>/ (one folder
// per ABI; src/main/core/runtime/layout.ts `sqliteBinding` names the same file) and the core opens the
// database with better-sqlite3's `nativeBinding` option pointed at it.
//
// How: a copy of the installed package (its sources and the SQLite amalgamation ship in it) is staged in
// .build/electron-native/, then (1) prebuild-install fetches the matching prebuilt binary, or (2)
// node-gyp compiles it against Electron's headers (SHIRA_ELECTRON_HEADERS, a folder with include/node,
// or downloaded from Electron's header server). Offline with neither, it says so and exits 1; the
// studio server path is unaffected.
//
// Usage: node scripts/electron-native.mjs [--force]
//        node scripts/electron-native.mjs --rehearse-node   the same pipeline against this Node's own
//        headers, into .build/electron-native-rehearsal/, then loaded through nativeBinding: checks the
//        staging, build and placement steps on a machine that cannot fetch Electron's headers.
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (msg) => console.log(`[electron-native] ${msg}`);

/** Where the core looks for Electron's better-sqlite3 (mirrors layout.ts `sqliteBinding`). */
export function electronSqlitePath(root, abi) {
  return join(root, 'electron-native', `abi${abi}`, 'better_sqlite3.node');
}

/** The installed Electron: its version and NODE_MODULE_VERSION (the npm package ships `abi_version`). */
export function electronTarget(root = ROOT) {
  const dir = join(root, 'node_modules', 'electron');
  if (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'abi_version'))) return null;
  const version = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).version;
  return { runtime: 'electron', version, abi: readFileSync(join(dir, 'abi_version'), 'utf8').trim() };
}

function packageVersion(root) {
  return JSON.parse(readFileSync(join(root, 'node_modules', 'better-sqlite3', 'package.json'), 'utf8')).version;
}

/** npm's own node-gyp: npm exports its path to scripts it runs; otherwise it sits inside npm's global folder. */
function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  const r = spawnSync('npm', ['root', '-g'], { encoding: 'utf8', shell: process.platform === 'win32' });
  const candidate = r.status === 0 ? join(r.stdout.trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js') : null;
  return candidate && existsSync(candidate) ? candidate : null;
}

/**
 * Makes sure `<outRoot>/electron-native/abi<N>/better_sqlite3.node` exists for `target`. Returns
 * { ok, path, how: 'present'|'prebuilt'|'source' } or { ok: false, path, why }.
 */
export function ensureSqliteFor(target, { root = ROOT, outRoot = root, headers = process.env.SHIRA_ELECTRON_HEADERS, force = false, allowDownload = true } = {}) {
  const out = electronSqlitePath(outRoot, target.abi);
  const infoFile = join(dirname(out), 'build-info.json');
  const want = { betterSqlite3: packageVersion(root), runtime: target.runtime, version: target.version, abi: target.abi, platform: process.platform, arch: process.arch };
  if (!force && existsSync(out) && existsSync(infoFile)) {
    const have = JSON.parse(readFileSync(infoFile, 'utf8'));
    if (Object.entries(want).every(([k, v]) => have[k] === v)) return { ok: true, path: out, how: 'present' };
  }
  const stage = join(root, '.build', 'electron-native', `better-sqlite3-${target.runtime}-${target.abi}`);
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  const pkg = join(root, 'node_modules', 'better-sqlite3');
  for (const name of ['package.json', 'binding.gyp', 'src', 'deps', 'lib']) cpSync(join(pkg, name), join(stage, name), { recursive: true });
  const built = join(stage, 'build', 'Release', 'better_sqlite3.node');
  // node-gyp honours npm_config_nodedir over --target: left set (setup sets it to /usr on Debian) it
  // would compile against Node's headers and produce exactly the wrong-ABI binary this avoids.
  const env = { ...process.env };
  delete env.npm_config_nodedir;
  const tries = [];

  if (allowDownload && target.runtime === 'electron') {
    say(`fetching the prebuilt better-sqlite3 ${want.betterSqlite3} for Electron ${target.version} (ABI ${target.abi})`);
    const bin = createRequire(join(root, 'package.json')).resolve('prebuild-install/bin.js');
    const r = spawnSync(process.execPath, [bin, '--runtime=electron', `--target=${target.version}`, `--arch=${process.arch}`, `--platform=${process.platform}`], {
      cwd: stage,
      env,
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (r.status === 0 && existsSync(built)) return place(built, out, infoFile, { ...want, how: 'prebuilt' });
    tries.push(`no prebuilt binary (${(r.stderr || r.error?.message || '').trim().split('\n').pop() || `exit ${r.status}`})`);
  }

  const gyp = nodeGyp();
  if (!gyp) {
    tries.push('node-gyp not found (it comes with npm; set npm_config_node_gyp to its bin/node-gyp.js)');
    return { ok: false, path: out, why: tries.join('; ') };
  }
  const args = [gyp, 'rebuild', '--release', `--target=${target.version}`, `--arch=${process.arch}`];
  if (target.runtime === 'electron') args.push('--runtime=electron');
  if (headers) args.push(`--nodedir=${headers}`);
  else if (target.runtime === 'electron' && allowDownload) args.push('--dist-url=https://electronjs.org/headers');
  else if (target.runtime === 'electron') {
    tries.push("Electron's headers are not here (set SHIRA_ELECTRON_HEADERS to a folder with include/node)");
    return { ok: false, path: out, why: tries.join('; ') };
  }
  say(`compiling better-sqlite3 ${want.betterSqlite3} for ${target.runtime} ${target.version} (ABI ${target.abi})${headers ? ` against ${headers}` : ''}; ~2 minutes`);
  const jobs = String(Math.max(1, Math.min(2, Number(process.env.SHIRA_BUILD_JOBS) || 2)));
  const r = spawnSync(process.execPath, args, { cwd: stage, env: { ...env, JOBS: jobs }, encoding: 'utf8', timeout: 900_000 });
  if (r.status === 0 && existsSync(built)) return place(built, out, infoFile, { ...want, how: 'source' });
  const log = r.stderr || r.error?.message || '';
  writeFileSync(join(stage, 'build.log'), `${r.stdout ?? ''}${log}`);
  if (/network connectivity|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT/.test(log)) tries.push("Electron's headers could not be downloaded (offline?)");
  else {
    const firstErr = log.split('\n').find((l) => /error/i.test(l) && !/gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v)/.test(l));
    tries.push(`compiling failed${firstErr ? `: ${firstErr.trim().slice(0, 300)}` : ` (exit ${r.status})`}; see ${join(stage, 'build.log')}`);
  }
  return { ok: false, path: out, why: tries.join('; ') };
}

function place(built, out, infoFile, info) {
  mkdirSync(dirname(out), { recursive: true });
  // Copy then rename: a process that has the old file loaded keeps its mapping, never a half-written one.
  copyFileSync(built, `${out}.tmp`);
  renameSync(`${out}.tmp`, out);
  writeFileSync(infoFile, `${JSON.stringify({ ...info, builtAt: new Date().toISOString() }, null, 2)}\n`);
  return { ok: true, path: out, how: info.how };
}

/** Electron's copy, for setup.mjs and start.mjs. */
export function ensureElectronSqlite(options = {}) {
  const target = electronTarget(options.root ?? ROOT);
  if (!target) return { ok: false, path: null, why: 'the electron package is not installed' };
  return ensureSqliteFor(target, options);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const force = process.argv.includes('--force');
  if (process.argv.includes('--rehearse-node')) {
    const target = { runtime: 'node', version: process.versions.node, abi: process.versions.modules };
    const outRoot = join(ROOT, '.build', 'electron-native-rehearsal');
    const headers = process.env.npm_config_nodedir ?? (existsSync('/usr/include/node/node.h') ? '/usr' : undefined);
    const r = ensureSqliteFor(target, { outRoot, headers, force: true, allowDownload: false });
    if (!r.ok) {
      console.error(`[electron-native] rehearsal failed: ${r.why}`);
      process.exit(1);
    }
    const Database = createRequire(join(ROOT, 'package.json'))('better-sqlite3');
    const db = new Database(':memory:', { nativeBinding: r.path });
    say(`rehearsal: built ${r.path} (${r.how}); loaded through nativeBinding: SQLite ${db.prepare('SELECT sqlite_version() AS v').get().v}`);
    db.close();
  } else {
    const r = ensureElectronSqlite({ force });
    if (r.ok) say(`${r.how === 'present' ? 'up to date' : `built (${r.how})`}: ${r.path}`);
    else {
      console.error(`[electron-native] skipped: ${r.why}.`);
      console.error('[electron-native] The desktop window needs it; the studio server (npm run serve) works without it.');
      console.error('[electron-native] With internet, or SHIRA_ELECTRON_HEADERS set: npm run rebuild:electron');
      process.exit(1);
    }
  }
}
