// ESLint, kept light: obvious mistakes (unused names, a promise nobody awaits or catches, unreachable code, a
// misused Svelte rune), never style — layout is Prettier's (.prettierrc.json), and type errors, undefined names
// included, are tsc's and svelte-check's (`npm run typecheck`), so no-undef is off for TypeScript as
// typescript-eslint advises. `npm run lint` runs it with the format check; `npm test` runs both.
import js from '@eslint/js';
import svelte from 'eslint-plugin-svelte';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['out/', 'dist/', 'native/', 'resources/', 'tests/artifacts/', '.data/', 'electron-native/', '.build/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  svelte.configs.recommended,
  { languageOptions: { globals: globals.node } },
  { files: ['src/renderer/**', 'src/preload/**'], languageOptions: { globals: globals.browser } },
  {
    files: ['**/*.svelte', '**/*.svelte.ts'],
    languageOptions: { parserOptions: { parser: tseslint.parser, extraFileExtensions: ['.svelte'] } },
  },
  {
    // A promise nobody awaits, returns or catches: its failure would vanish (or end the process). Type-aware, so
    // only for the TypeScript files the three tsconfigs hold.
    files: ['**/*.ts'],
    ignores: ['**/*.svelte.ts'],
    languageOptions: { parserOptions: { project: ['./tsconfig.node.json', './tsconfig.preload.json', './tsconfig.web.json'], tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      // A variable a closure reads before its one assignment cannot be const (Svelte files have their own rule).
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    rules: {
      // `_name` marks a parameter kept for its position; an error a catch does not need may go unnamed.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Tests and the Svelte test harness use `any` where the runes modules cannot be typed under Node.
      '@typescript-eslint/no-explicit-any': 'off',
      // The state classes keep plain Maps and Sets on purpose: caches and indexes behind a $state version or a
      // $state.raw value, where SvelteMap's per-key reactivity would only add work.
      'svelte/prefer-svelte-reactivity': 'off',
    },
  },
);
