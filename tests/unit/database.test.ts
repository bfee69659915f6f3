import Database from 'better-sqlite3';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { migrate, openDatabase, schemaVersion, type Db } from '../../src/main/core/db/database';
import { LibraryChecker } from '../../src/main/core/db/checker';
import { LATEST_SCHEMA_VERSION, MIGRATIONS, type Migration } from '../../src/main/core/db/migrations';
import { tempDir } from './helpers';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});
/** The health check as the core runs it: a worker thread with its own read-only connection to `file`. */
async function health(db: Db, file: string, full = false) {
  const warnings: string[] = [];
  const checker = new LibraryChecker(db, file, (m) => warnings.push(m));
  try {
    const report = await checker.check(full);
    expect(warnings).toEqual([]); // it really ran in the worker thread
    return report;
  } finally {
    await checker.close();
  }
}

function dbFile(): string {
  const dir = tempDir();
  cleanups.push(dir.cleanup);
  return join(dir.path, 'library.sqlite');
}

describe('library database', () => {
  it('applies every migration once, in WAL mode with foreign keys on', () => {
    const file = dbFile();
    const db = openDatabase(file);
    expect(schemaVersion(db)).toBe(LATEST_SCHEMA_VERSION);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name);
    for (const t of ['base_models', 'datasets', 'dataset_images', 'adapters', 'adapter_tensors', 'training_runs', 'training_loss', 'generations', 'mixes', 'mix_entries']) {
      expect(tables).toContain(t);
    }
    db.close();
    // Re-opening is a no-op: nothing re-applied, history has one row per migration.
    const again = openDatabase(file);
    expect((again.prepare('SELECT count(*) AS n FROM migrations').get() as { n: number }).n).toBe(MIGRATIONS.length);
    again.close();
  });

  it('rolls a failing migration back whole and keeps the previous version', () => {
    const file = dbFile();
    openDatabase(file).close();
    const broken: Migration[] = [...MIGRATIONS, { version: LATEST_SCHEMA_VERSION + 1, name: 'broken', sql: 'CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);' }];
    expect(() => openDatabase(file, broken)).toThrow(/no such table/);
    const db = new Database(file);
    expect(schemaVersion(db)).toBe(LATEST_SCHEMA_VERSION);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'half_done'").get()).toBeUndefined();
    db.close();
  });

  it('refuses a library written by a newer version, saying so', () => {
    const file = dbFile();
    const raw = new Database(file);
    raw.pragma(`user_version = ${LATEST_SCHEMA_VERSION + 5}`);
    raw.close();
    expect(() => openDatabase(file)).toThrow(/newer Shira Studio/);
  });

  it('enforces the schema: cascades, checks and foreign keys', async () => {
    const file = dbFile();
    const db = openDatabase(file);
    const ds = Number(db.prepare("INSERT INTO datasets (name) VALUES ('a')").run().lastInsertRowid);
    const img = Number(db.prepare("INSERT INTO dataset_images (dataset_id, rel_path, width, height, format, bytes, sha256) VALUES (?, 'x.png', 4, 4, 'png', 10, 'h')").run(ds).lastInsertRowid);
    db.prepare("INSERT INTO dataset_image_data (image_id, normalized, thumb_webp) VALUES (?, x'00', x'00')").run(img);
    expect(() => db.prepare("INSERT INTO adapters (name, kind) VALUES ('bad', 'dora')").run()).toThrow(/CHECK/);
    expect(() => db.prepare("INSERT INTO dataset_images (dataset_id, rel_path, width, height, format, bytes, sha256) VALUES (999, 'y', 1, 1, 'png', 1, 'z')").run()).toThrow(/FOREIGN KEY/);
    db.prepare('DELETE FROM datasets WHERE id = ?').run(ds);
    expect((db.prepare('SELECT count(*) AS n FROM dataset_image_data').get() as { n: number }).n).toBe(0);
    expect(await health(db, file)).toMatchObject({ ok: true, check: 'quick', integrity: ['ok'], foreignKeyViolations: 0, journalMode: 'wal' });
    db.close();
  });

  it('health reports foreign-key damage', async () => {
    const file = dbFile();
    const db = openDatabase(file);
    db.pragma('foreign_keys = OFF');
    db.prepare("INSERT INTO dataset_images (dataset_id, rel_path, width, height, format, bytes, sha256) VALUES (42, 'orphan', 1, 1, 'png', 1, 'z')").run();
    const report = await health(db, file);
    expect(report.ok).toBe(false);
    expect(report.foreignKeyViolations).toBe(1);
    db.close();
  });

  it('runs the full integrity check on its own connection, times it, and reports a damaged file instead of failing', async () => {
    const file = dbFile();
    const db = openDatabase(file);
    const ds = Number(db.prepare("INSERT INTO datasets (name) VALUES ('a')").run().lastInsertRowid);
    const put = db.prepare("INSERT INTO dataset_images (dataset_id, rel_path, width, height, format, bytes, sha256) VALUES (?, ?, 4, 4, 'png', 10, ?)");
    db.transaction(() => {
      for (let i = 0; i < 2000; i++) put.run(ds, `img-${i}.png`, `hash-${i}`);
    })();
    const full = await health(db, file, true);
    expect(full).toMatchObject({ ok: true, check: 'full', integrity: ['ok'] });
    expect(full.checkMs).toBeGreaterThan(0);
    expect(full.lastFullCheck).toMatchObject({ ok: true, ms: full.checkMs });
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
    // Scribble over the middle of the file (table and index pages), as a failing disk would.
    const bytes = readFileSync(file);
    bytes.fill(0xa5, Math.floor(bytes.length / 2), Math.floor(bytes.length / 2) + 4096);
    writeFileSync(file, bytes);
    const damaged = new Database(file);
    const report = await health(damaged as unknown as Db, file, true);
    expect(report.ok).toBe(false);
    expect(report.integrity.join('\n')).not.toBe('ok');
    damaged.close();
  });

  it('migrate() is idempotent on an up-to-date database', () => {
    const db = openDatabase(dbFile());
    expect(migrate(db)).toBe(LATEST_SCHEMA_VERSION);
    db.close();
  });
});
