// Drives the built app the way a user of the studio server does: start `out/main/server.js` on a
// fresh data folder, open the printed URL in Debian's chromium, and clean every trace up afterwards.
// Builds nothing: run `npx electron-vite build` first.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
export const SERVER_SCRIPT = join(ROOT, 'out/main/server.js');
const CHROMIUM = process.env.SHIRA_E2E_CHROMIUM ?? '/usr/bin/chromium';
const URL_PATTERN = /http:\/\/127\.0\.0\.1:\d+\/\?token=[A-Za-z0-9_-]+/;
const START_TIMEOUT_MS = 30_000;
/** Screenshots the tests take, and those of failed steps. */
export const ARTIFACTS = join(ROOT, 'tests/artifacts');

export interface Studio {
  /** The tokenised URL the server printed. */
  url: string;
  dataDir: string;
  context: BrowserContext;
  page: Page;
  /** Errors the page threw or logged (CSP violations and failed loads show up here); a test ends expecting none. */
  pageErrors: string[];
  /** Everything the server wrote, for failure messages. */
  serverOutput(): string;
  close(): Promise<void>;
}

export function waitForUrl(server: ChildProcess, output: () => string): Promise<string> {
  return new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => fail(new Error(`server printed no URL within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    const onData = () => {
      const match = URL_PATTERN.exec(output());
      if (match) {
        cleanup();
        resolveUrl(match[0]);
      }
    };
    const onExit = (code: number | null) => fail(new Error(`server exited (code ${code}) before printing its URL`));
    function cleanup() {
      clearTimeout(timer);
      server.stdout?.off('data', onData);
      server.off('exit', onExit);
    }
    function fail(error: Error) {
      cleanup();
      reject(new Error(`${error.message}\n--- server output ---\n${output()}`));
    }
    server.stdout?.on('data', onData);
    server.once('exit', onExit);
  });
}

export async function stopServer(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise<void>((r) => server.once('exit', () => r()));
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

export async function startStudio(): Promise<Studio> {
  if (!existsSync(SERVER_SCRIPT)) throw new Error(`${SERVER_SCRIPT} is missing: run \`npx electron-vite build\` first.`);
  const dataDir = await mkdtemp(join(tmpdir(), 'shira-e2e-data-'));
  const profileDir = await mkdtemp(join(tmpdir(), 'shira-e2e-profile-'));
  const env = { ...process.env };
  // The data folder must be the fresh one given on the command line, never a developer's library.
  delete env.SHIRA_STUDIO_HOME;

  let output = '';
  const server = spawn(process.execPath, [SERVER_SCRIPT, '--port', '0', '--data-dir', dataDir], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout.setEncoding('utf8');
  server.stderr.setEncoding('utf8');
  server.stdout.on('data', (chunk: string) => (output += chunk));
  server.stderr.on('data', (chunk: string) => (output += chunk));

  let context: BrowserContext | undefined;
  const cleanup = async () => {
    await context?.close().catch(() => {});
    await stopServer(server);
    await rm(profileDir, { recursive: true, force: true });
    await rm(dataDir, { recursive: true, force: true });
  };

  try {
    const url = await waitForUrl(server, () => output);
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 720 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    // Everything here is local and small: a step that takes longer than this is a failure, and
    // failing sooner leaves room in the test's own timeout for the teardown and the report.
    context.setDefaultTimeout(15_000);
    const page = context.pages()[0] ?? (await context.newPage());
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(`console: ${message.text()}`);
    });
    return { url, dataDir, context, page, pageErrors, serverOutput: () => output, close: cleanup };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/**
 * A fresh studio for every test of the calling `describe`: `const studio = useStudio();` then
 * `studio()` inside a test. When a test fails, what the page looked like (tests/artifacts/failed-<test>.png)
 * and the end of the server's output say more than a locator's timeout does.
 */
export function useStudio(): () => Studio {
  let studio: Studio | undefined;
  beforeEach(async () => {
    studio = await startStudio();
  });
  afterEach(async (context) => {
    if (context.task.result?.state === 'fail' && studio) {
      const slug = context.task.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
      await mkdir(ARTIFACTS, { recursive: true });
      await studio.page.screenshot({ path: join(ARTIFACTS, `failed-${slug}.png`) }).catch(() => {});
      console.error(studio.serverOutput().slice(-4000));
    }
    await studio?.close();
    studio = undefined;
  });
  return () => {
    if (!studio) throw new Error('useStudio(): the studio exists only inside a test');
    return studio;
  };
}

/** A folder `make` builds once for the calling `describe` and removed after it: `const images = useFolder(make);` then `images()`. */
export function useFolder(make: () => Promise<string>): () => string {
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await make();
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (!dir) throw new Error('useFolder(): the folder exists only inside the describe');
    return dir;
  };
}
