// Where the app's own binaries and resources are, in a source checkout and in an installed app
// (electron-builder's layout, electron-builder.json):
//
//   checkout                                           installed (<res> = the app's resources folder)
//   <root>/out/main/*.js                               <res>/app.asar/out/main/*.js
//   <root>/native/build/shira-worker                   <res>/native/cpu/shira-worker   (RPATH $ORIGIN/../lib)
//   <root>/native/build-cuda/shira-worker              <res>/native/cuda/shira-worker
//   (system or PyTorch libtorch)                       <res>/native/lib/*
//   <root>/resources/models/<name>/                    <res>/models/<name>/
//   <root>/electron-native/abi<N>/better_sqlite3.node  <res>/app.asar.unpacked/electron-native/abi<N>/…
//
// The worker and the model live outside the asar: the worker is a separate process that cannot read
// inside it, and .node files must be real files for dlopen.
import { basename, dirname, join, resolve } from 'node:path';

export type RuntimeKind = 'node' | 'electron';

export interface AppLayout {
  /** Installed by an installer (an asar archive), not run from a checkout. */
  packaged: boolean;
  /** The folder holding `models/` (what Core's `resourcesDir` option takes). */
  resourcesDir: string;
  /** Worker builds, CPU and CUDA; either may be missing. SHIRA_WORKER_BIN pins one (cuda: null). */
  workers: { cpu: string; cuda: string | null };
}

const exe = (platform: NodeJS.Platform) => (platform === 'win32' ? 'shira-worker.exe' : 'shira-worker');

/** `appRoot` is two folders above out/main/ — a checkout, or `<res>/app.asar` once installed. */
export function appLayout(appRoot: string, env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): AppLayout {
  const root = resolve(appRoot);
  const packaged = basename(root) === 'app.asar';
  const res = dirname(root);
  const workers = env.SHIRA_WORKER_BIN
    ? { cpu: resolve(env.SHIRA_WORKER_BIN), cuda: null }
    : packaged
      ? { cpu: join(res, 'native', 'cpu', exe(platform)), cuda: join(res, 'native', 'cuda', exe(platform)) }
      : { cpu: join(root, 'native', 'build', exe(platform)), cuda: join(root, 'native', 'build-cuda', exe(platform)) };
  return { packaged, resourcesDir: packaged ? res : join(root, 'resources'), workers };
}

/**
 * The better-sqlite3 binary a runtime loads. Node (studio server, tests, tools) uses the package's own
 * build in node_modules (null: better-sqlite3's default lookup). Electron cannot: better-sqlite3 is built
 * against V8's ABI (NODE_MODULE_VERSION), and Electron's differs from Node's, so its copy is built apart,
 * per ABI, by scripts/electron-native.mjs — whose `electronSqlitePath` must name the same file.
 */
export function sqliteBinding(appRoot: string, runtime: RuntimeKind, abi: string): string | null {
  if (runtime === 'node') return null;
  const root = resolve(appRoot);
  // Electron redirects reads inside app.asar, but dlopen needs the unpacked real file.
  const base = basename(root) === 'app.asar' ? `${root}.unpacked` : root;
  return join(base, 'electron-native', `abi${abi}`, 'better_sqlite3.node');
}

/** Which runtime this process is: Electron's processes (main, utility) carry `versions.electron`. */
export function currentRuntime(versions: NodeJS.ProcessVersions = process.versions): { runtime: RuntimeKind; abi: string } {
  return { runtime: versions.electron ? 'electron' : 'node', abi: versions.modules };
}
