#!/usr/bin/env node
// The static checks, listed once. `npm run typecheck`, `npm run lint` and `npm run format` run a group from here,
// and `npm test` (scripts/test.mjs) runs the typecheck and lint groups from this same list.
//
//   node scripts/checks.mjs typecheck|lint|format
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** What Prettier formats (.prettierignore leaves out the rest). */
const FORMATTED = ['src/**/*.{ts,svelte}', 'tools/**/*.ts', 'tests/**/*.{ts,mjs}', 'scripts/**/*.mjs', '*.{ts,js}'];

/** group → [name, command, arguments]; commands are the project's own (node_modules/.bin). */
export const CHECKS = {
  typecheck: [
    ['typecheck (tsc: main, tools, tests)', 'tsc', ['--noEmit', '-p', 'tsconfig.node.json']],
    ['typecheck (tsc: preload)', 'tsc', ['--noEmit', '-p', 'tsconfig.preload.json']],
    ['typecheck (svelte-check: renderer)', 'svelte-check', ['--tsconfig', './tsconfig.web.json', '--fail-on-warnings']],
  ],
  lint: [
    ['lint (eslint)', 'eslint', ['--max-warnings', '0', '.']],
    ['format (prettier --check)', 'prettier', ['--check', ...FORMATTED]],
  ],
  format: [['format (prettier --write)', 'prettier', ['--write', '--log-level', 'warn', ...FORMATTED]]],
};

/** Runs one check with its output on this terminal; true when it passed. */
export function runCheck([name, command, args]) {
  console.log(`\n=== ${name}`);
  const bin = join(ROOT, 'node_modules', '.bin', process.platform === 'win32' ? `${command}.cmd` : command);
  return spawnSync(bin, args, { cwd: ROOT, stdio: 'inherit', shell: process.platform === 'win32' }).status === 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const group = CHECKS[process.argv[2]];
  if (!group) {
    console.error(`usage: node scripts/checks.mjs ${Object.keys(CHECKS).join('|')}`);
    process.exit(2);
  }
  const failed = group.filter((check) => !runCheck(check)).map(([name]) => name);
  if (failed.length) console.error(`\nFailed: ${failed.join(', ')}`);
  process.exit(failed.length ? 1 : 0);
}
