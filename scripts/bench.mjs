#!/usr/bin/env node
// Runs the native worker's benchmarks and prints one JSON object per row on stdout.
//
//   node scripts/bench.mjs train|switch|grad [--quick] [--device cpu|cuda|auto] [--models builtin,sd15] [--key value]...
//
// Extra --key value pairs go to `shira-worker bench` unchanged (e.g. --reps 5 --size 32 --density 0.01).
// OMP_NUM_THREADS defaults to 1 (shared machines; set it to use more cores). Exit code 1 when the worker fails.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const kind = argv[0];
if (!['train', 'switch', 'grad'].includes(kind)) {
  console.error('usage: node scripts/bench.mjs train|switch|grad [--quick] [--device cpu|cuda|auto] [--key value]...');
  process.exit(2);
}
const passArgs = ['bench', '--kind', kind];
let device = 'auto';
for (let i = 1; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--quick') passArgs.push('--quick', 'true');
  else if (a === '--device' && i + 1 < argv.length) device = argv[++i];
  else if (a.startsWith('--') && i + 1 < argv.length) passArgs.push(a, argv[++i]);
  else {
    console.error(`bench: unexpected argument '${a}'`);
    process.exit(2);
  }
}
const binary =
  process.env.SHIRA_WORKER_BIN ||
  [join(root, 'native/build/shira-worker'), join(root, 'native/build/Release/shira-worker.exe'), join(root, 'native/build/shira-worker.exe')].find((p) => existsSync(p));
if (!binary) {
  console.error('bench: native/build/shira-worker not found; build it first (tests/native/run.sh or npm start)');
  process.exit(1);
}
const env = { ...process.env, OMP_NUM_THREADS: process.env.OMP_NUM_THREADS || '1' };
const child = spawn(binary, ['--device', device, ...passArgs], { env, stdio: ['ignore', 'pipe', 'inherit'] });
let buffer = '';
let ok = false;
let failure = null;
child.stdout.setEncoding('utf8');
child.stdout.on('data', (chunk) => {
  buffer += chunk;
  let nl;
  while ((nl = buffer.indexOf('\n')) >= 0) {
    const line = buffer.slice(0, nl).trim();
    buffer = buffer.slice(nl + 1);
    if (!line) continue;
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      console.error(`bench: worker printed a non-JSON line: ${line.slice(0, 200)}`);
      continue;
    }
    if (msg.event === 'bench_row') process.stdout.write(JSON.stringify(msg.row) + '\n');
    else if ('ok' in msg) {
      ok = msg.ok === true;
      if (!ok) failure = msg.error;
    }
  }
});
child.on('close', (code) => {
  if (!ok) {
    console.error(`bench: worker failed (exit ${code})${failure ? `: ${failure.type}: ${failure.message}` : ''}`);
    process.exit(1);
  }
  process.exit(0);
});
