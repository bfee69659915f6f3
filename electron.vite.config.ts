import { resolve } from 'node:path';
import { defineConfig } from 'electron-vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// One build, three runtimes (see docs/architecture.md):
//   out/main      — Node: Electron main, the core's utility-process entry, the studio server CLI,
//                   the headless command line (tools.js: pack, and the research tools of tools/)
//   out/preload   — the sandboxed preload (CommonJS: sandboxed preloads cannot load ES modules)
//   out/renderer  — the browser bundle shared by Electron and the studio server
export default defineConfig({
  main: {
    build: {
      rolldownOptions: {
        input: {
          index: resolve('src/main/hosts/electron/main.ts'),
          'core-host': resolve('src/main/hosts/electron/core-host.ts'),
          server: resolve('src/main/hosts/server/cli.ts'),
          tools: resolve('src/main/hosts/cli/main.ts'),
        },
      },
    },
  },
  preload: {
    build: {
      rolldownOptions: {
        input: { index: resolve('src/preload/index.ts') },
        output: { format: 'cjs', entryFileNames: '[name].cjs' },
      },
    },
  },
  renderer: {
    root: 'src/renderer',
    build: {
      rolldownOptions: { input: resolve('src/renderer/index.html') },
    },
    plugins: [svelte()],
  },
});
