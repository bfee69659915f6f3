// `npm run serve` / `node out/main/server.js [--port N] [--host H] [--data-dir DIR]`
import { fileURLToPath } from 'node:url';
import { Core } from '../../core/core';
import { argValue, resolveDataDir } from '../../core/paths';
import { appLayout } from '../../core/runtime/layout';
import { isLoopback, startStudioServer } from './server';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log('Usage: shira-studio serve [--port N] [--host ADDRESS] [--data-dir DIR]\n  Binds 127.0.0.1 on a free port by default. SHIRA_STUDIO_HOME also sets the data folder.');
    return;
  }
  const portText = argValue(argv, 'port');
  const port = portText === undefined ? 0 : Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be an integer 0–65535, got "${portText}"`);
  const host = argValue(argv, 'host') ?? '127.0.0.1';
  const dataDir = resolveDataDir(argValue(argv, 'data-dir'));
  const appRoot = fileURLToPath(new URL('../../', import.meta.url));
  // The CPU or CUDA worker build, chosen at the engine's start (core/worker/select.ts).
  const layout = appLayout(appRoot);
  const core = new Core({ dataDir, host: 'server', resourcesDir: layout.resourcesDir, worker: { binary: layout.workers.cpu, cuda: layout.workers.cuda } });
  const rendererDir = fileURLToPath(new URL('../renderer/', import.meta.url));
  const server = await startStudioServer({ core, rendererDir, host, port });
  if (!isLoopback(host)) {
    console.warn(`WARNING: listening on ${host}, not only this computer. Anyone who can reach this address and has the token can use the studio.`);
  }
  console.log(`Shira Studio (studio server) — library: ${dataDir}`);
  console.log(`Open ${server.url}`);
  const shutdown = () => {
    void server.close().finally(() => {
      void core.close().finally(() => process.exit(0));
    });
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

main().catch((error: unknown) => {
  console.error(`Shira Studio server could not start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
