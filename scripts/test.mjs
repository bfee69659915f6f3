#!/usr/bin/env node
// `npm test` after setup: type checks, lint and format check (scripts/checks.mjs), unit, tools and end-to-end tests
// (vitest), native tests when native/ exists; then one closing line "tests: N passed, N failed" over everything.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHECKS, runCheck } from './checks.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const artifacts = join(ROOT, 'tests', 'artifacts');
mkdirSync(artifacts, { recursive: true });
let passed = 0;
let failed = 0;
const failures = [];

function step(name, cmd, args, env = {}) {
  console.log(`\n=== ${name}`);
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', env: { ...process.env, ...env } });
  return r.status ?? 1;
}

// Type checks, lint and the format check: the same list `npm run typecheck` and `npm run lint` run.
for (const check of [...CHECKS.typecheck, ...CHECKS.lint]) {
  if (runCheck(check)) passed++;
  else {
    failed++;
    failures.push(check[0]);
  }
}

const report = join(artifacts, 'vitest.json');
step('vitest (unit, tools, e2e)', 'npx', ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`]);
if (existsSync(report)) {
  const json = JSON.parse(readFileSync(report, 'utf8'));
  passed += json.numPassedTests;
  failed += json.numFailedTests;
  // A file that failed to load has no failed *tests*, but the run is still red: count it once.
  if (!json.success && json.numFailedTests === 0) failed++;
  if (!json.success) failures.push('vitest');
} else {
  failed++;
  failures.push('vitest (no report)');
}

// Shell runners that end with "<label>: N passed, N failed": the native sources' format (skipped where
// clang-format 14 is missing), the native tests (they build the worker), then the PyTorch reference checks that
// use it (skipped, not failed, where python3-torch is missing), then the CUDA machine's pipeline rehearsed on CPU
// (its direct build, run, outputs and refusals).
for (const [label, runner] of [
  ['format', join(ROOT, 'scripts', 'format-native.sh')],
  ['native', join(ROOT, 'tests', 'native', 'run.sh')],
  ['reference', join(ROOT, 'tests', 'reference', 'run.sh')],
  ['sd-reference', join(ROOT, 'tests', 'reference', 'sd', 'run.sh')],
  ['gpu-pipeline', join(ROOT, 'tests', 'reference', 'gpu_pipeline.sh')],
]) {
  if (!existsSync(runner)) continue;
  console.log(`\n=== ${label} tests`);
  const r = spawnSync('bash', [runner], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  process.stdout.write(r.stdout ?? '');
  const m = new RegExp(`${label}: (\\d+) passed, (\\d+) failed`).exec(r.stdout ?? '');
  if (m) {
    passed += Number(m[1]);
    failed += Number(m[2]);
  }
  if (r.status !== 0 || !m) {
    if (!m) failed++;
    failures.push(label);
  }
}

if (failures.length) console.log(`\nFailed: ${failures.join(', ')}`);
console.log(`\ntests: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
