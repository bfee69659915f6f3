import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export const APP_NAME = 'Shira Studio';

/**
 * The data directory, in priority order: an explicit `--data-dir`, `SHIRA_STUDIO_HOME`, then the
 * OS app-data folder Electron would use for userData — so the studio server and the desktop app
 * share one library by default.
 */
export function resolveDataDir(explicit?: string, env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (explicit) return resolve(explicit);
  if (env.SHIRA_STUDIO_HOME) return resolve(env.SHIRA_STUDIO_HOME);
  return join(osAppDataDir(env, platform), APP_NAME);
}

export function osAppDataDir(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (platform === 'win32') return env.APPDATA ?? join(homedir(), 'AppData', 'Roaming');
  if (platform === 'darwin') return join(homedir(), 'Library', 'Application Support');
  return env.XDG_CONFIG_HOME ?? join(homedir(), '.config');
}

/**
 * The native worker binary: SHIRA_WORKER_BIN, else the CMake build next to the app
 * (`<root>/native/build/shira-worker`, root being two folders above out/main/).
 */
export function defaultWorkerBinary(appRoot: string, env: NodeJS.ProcessEnv = process.env): string {
  if (env.SHIRA_WORKER_BIN) return resolve(env.SHIRA_WORKER_BIN);
  return join(appRoot, 'native', 'build', process.platform === 'win32' ? 'shira-worker.exe' : 'shira-worker');
}

/** Where exports go unless the desktop user picks a folder. */
export function exportsDir(dataDir: string): string {
  return join(dataDir, 'exports');
}

/** Where the studio server stages browser uploads (one sub-folder per upload). */
export function uploadsDir(dataDir: string): string {
  return join(dataDir, 'uploads');
}

/** The app's shipped resources (built-in models, sample data): `<root>/resources`. */
export function resourcesDir(appRoot: string): string {
  return join(appRoot, 'resources');
}

/** Reads `--name value` / `--name=value` from argv; hosts share this so flags mean the same everywhere. */
export function argValue(argv: readonly string[], name: string): string | undefined {
  const flag = `--${name}`;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === flag) return argv[i + 1];
    if (arg.startsWith(`${flag}=`)) return arg.slice(flag.length + 1);
  }
  return undefined;
}
