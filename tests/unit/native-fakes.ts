// Real broken binaries for the self-check tests, compiled with the system C compiler: the loaders'
// own failures (Node's ABI check, the dynamic linker) rather than strings typed into a test.
import { spawnSync } from 'node:child_process';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const hasCc = spawnSync('sh', ['-c', 'command -v cc'], { stdio: 'ignore' }).status === 0;

function cc(dir: string, args: string[]): void {
  const r = spawnSync('cc', args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cc ${args.join(' ')}: ${r.stderr}`);
}

/**
 * A `.node` that registers itself the way a V8-ABI addon does (node.h's `struct node_module`) but
 * claims NODE_MODULE_VERSION `abi`: what a better-sqlite3 built for another runtime looks like to Node.
 */
export function addonBuiltForAbi(dir: string, abi: number): string {
  writeFileSync(
    join(dir, 'abi.c'),
    `struct node_module { int nm_version; unsigned int nm_flags; void* nm_dso_handle; const char* nm_filename;
  void* nm_register_func; void* nm_context_register_func; const char* nm_modname; void* nm_priv; void* nm_link; };
extern void node_module_register(void*);
static void init(void) {}
static struct node_module m = { ${abi}, 0, 0, "abi.c", (void*)init, 0, "fake", 0, 0 };
__attribute__((constructor)) static void reg(void) { node_module_register(&m); }
`,
  );
  cc(dir, ['-shared', '-fPIC', '-o', 'abi.node', 'abi.c']);
  return join(dir, 'abi.node');
}

/** An addon and an executable linked against `libshira_gone.so`, which is then deleted. */
export function binariesMissingALibrary(dir: string): { addon: string; executable: string; library: string } {
  writeFileSync(join(dir, 'gone.c'), 'int gone(void) { return 1; }\n');
  writeFileSync(join(dir, 'uses.c'), 'extern int gone(void);\nint use(void) { return gone(); }\n');
  writeFileSync(join(dir, 'main.c'), 'extern int gone(void);\nint main(void) { return gone(); }\n');
  cc(dir, ['-shared', '-fPIC', '-o', 'libshira_gone.so', 'gone.c']);
  cc(dir, ['-shared', '-fPIC', '-o', 'uses.node', 'uses.c', '-L.', '-lshira_gone']);
  cc(dir, ['-o', 'shira-worker', 'main.c', '-L.', '-lshira_gone']);
  rmSync(join(dir, 'libshira_gone.so'));
  return { addon: join(dir, 'uses.node'), executable: join(dir, 'shira-worker'), library: 'libshira_gone.so' };
}

/**
 * A shell stand-in for shira-worker: `info` prints the result line with `cuda_available` as given;
 * serving, it announces the `--device` it was started with, then waits for stdin to close.
 */
export function fakeWorker(file: string, cuda: boolean, torch = '2.5.1+cu124'): string {
  writeFileSync(
    file,
    `#!/bin/sh
if [ "$1" = info ]; then echo '{"ok":true,"result":{"torch":"${torch}","cuda_available":${cuda},"device":"cpu"}}'; exit 0; fi
echo '{"event":"ready","version":"fake","device":"'"$2"'","torch":"${torch}"}'
exec cat >/dev/null
`,
  );
  chmodSync(file, 0o755);
  return file;
}
