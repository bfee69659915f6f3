// The built studio server as a separate process, for tests that must watch it survive (the request
// fuzzer) or kill it outright (fault injection): spawn `out/main/server.js` on a data folder, call
// its API over HTTP with the bearer token, check it is alive, SIGKILL it, start it again.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { CallOutcome } from '../../src/shared/bridge';
import { SERVER_SCRIPT, stopServer, waitForUrl } from './harness';

export const ROOT = resolve(import.meta.dirname, '../..');

export interface ServerProcess {
  child: ChildProcess;
  pid: number;
  port: number;
  token: string;
  dataDir: string;
  output(): string;
  alive(): boolean;
  /** POST /api/call with the bearer token; resolves with the call's outcome (never rejects on an error answer). */
  call(method: string, input: unknown): Promise<CallOutcome>;
  /** Pids of the processes it started (the native workers), from /proc. */
  children(): number[];
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

export async function spawnServer(dataDir: string, env: Record<string, string> = {}): Promise<ServerProcess> {
  if (!existsSync(SERVER_SCRIPT)) throw new Error(`${SERVER_SCRIPT} is missing: run \`npx electron-vite build\` first.`);
  const childEnv: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: '1', ...env };
  delete childEnv.SHIRA_STUDIO_HOME;
  let output = '';
  const child = spawn(process.execPath, [SERVER_SCRIPT, '--port', '0', '--data-dir', dataDir], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (c: string) => (output += c));
  child.stderr!.on('data', (c: string) => (output += c));
  let url: string;
  try {
    url = await waitForUrl(child, () => output);
  } catch (error) {
    await stopServer(child);
    throw error;
  }
  const parsed = new URL(url);
  const port = Number(parsed.port);
  const token = parsed.searchParams.get('token')!;
  const exited = new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
  return {
    child,
    pid: child.pid!,
    port,
    token,
    dataDir,
    output: () => output,
    alive: () => child.exitCode === null && child.signalCode === null,
    call: async (method, input) => {
      const res = await fetch(`http://127.0.0.1:${port}/api/call`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ method, input }),
      });
      return (await res.json()) as CallOutcome;
    },
    children: () => {
      try {
        return readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        return [];
      }
    },
    kill9: async () => {
      child.kill('SIGKILL');
      await exited;
    },
    stop: () => stopServer(child),
  };
}

/** Resolves once `pid` is gone (a worker notices its parent's death by the end of its stdin). */
export async function waitGone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    // A zombie still answers kill(0); its state in /proc says it is dead.
    try {
      if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return true;
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
