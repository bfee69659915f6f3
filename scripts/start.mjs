#!/usr/bin/env node
// `npm start`: the desktop app when Electron can start here, otherwise the studio server in the
// browser — with the reason said plainly. Flags after `--` are passed on (e.g. --data-dir).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { electronSqlitePath, electronTarget, ensureElectronSqlite } from './electron-native.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const electronDir = join(ROOT, 'node_modules', 'electron');

function electronBinary() {
  const pathFile = join(electronDir, 'path.txt');
  if (existsSync(pathFile)) {
    const bin = join(electronDir, 'dist', readFileSync(pathFile, 'utf8').trim());
    if (existsSync(bin)) return { bin };
  }
  // Electron 45 downloads its binary lazily; try once, briefly, and fall back if offline.
  console.log('[start] Fetching the Electron binary (first run only)…');
  const r = spawnSync(process.execPath, [join(electronDir, 'install.js')], { cwd: electronDir, stdio: 'ignore', timeout: 90_000 });
  if (r.status === 0 && existsSync(pathFile)) {
    const bin = join(electronDir, 'dist', readFileSync(pathFile, 'utf8').trim());
    if (existsSync(bin)) return { bin, downloaded: true };
  }
  return { why: 'the Electron binary is not installed and could not be downloaded (offline, or downloads blocked)' };
}

/** better-sqlite3 for Electron: set-up built it (or tried) when Electron's binary was already here; after a first download, now. */
function electronSqlite(downloaded) {
  if (downloaded) return ensureElectronSqlite();
  const target = electronTarget(ROOT);
  return target && existsSync(electronSqlitePath(ROOT, target.abi)) ? { ok: true } : { ok: false, why: 'set-up could not build it' };
}

function serve(reason) {
  console.log(`[start] The desktop window cannot open: ${reason}.`);
  console.log('[start] Starting the studio server instead — open the URL below in your browser.');
  const child = spawn(process.execPath, [join(ROOT, 'out', 'main', 'server.js'), ...args], { stdio: 'inherit' });
  child.on('exit', (code) => process.exit(code ?? 0));
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
}

if (args.includes('--server') || process.env.SHIRA_STUDIO_SERVER === '1') {
  serve('the studio server was asked for (--server / SHIRA_STUDIO_SERVER=1)');
} else if (process.platform === 'linux' && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) {
  serve('no display (neither DISPLAY nor WAYLAND_DISPLAY is set)');
} else {
  const found = electronBinary();
  const sqlite = found.bin ? electronSqlite(found.downloaded) : null;
  if (!found.bin) {
    serve(found.why);
  } else if (!sqlite.ok) {
    serve(`better-sqlite3 for Electron's ABI could not be built (${sqlite.why}); with internet, run npm run rebuild:electron`);
  } else {
    const startedAt = Date.now();
    const child = spawn(found.bin, [ROOT, ...args], { stdio: 'inherit' });
    child.on('error', (e) => serve(`Electron failed to launch (${e.message})`));
    child.on('exit', (code) => {
      // A crash within seconds of launch is a broken environment, not a user quitting.
      if (code !== 0 && Date.now() - startedAt < 5000) serve(`Electron exited at start with code ${code}`);
      else process.exit(code ?? 0);
    });
  }
}
