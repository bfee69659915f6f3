import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkHealth, migrate, openDatabase, schemaVersion } from '../../src/main/core/db/database';
import { LATEST_SCHEMA_VERSION, MIGRATIONS, type Migration } from '../../src/main/core/db/migrations';
import { tempDir } from './helpers';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});
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
    const broken: Migration[] = [
      ...MIGRATIONS,
      { version: LATEST_SCHEMA_VERSION + 1, name: 'broken', sql: 'CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);' },
    ];
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

  it('enforces the schema: cascades, checks and foreign keys', () => {
    const db = openDatabase(dbFile());
    const ds = Number(db.prepare("INSERT INTO datasets (name) VALUES ('a')").run().lastInsertRowid);
    const img = Number(
      db.prepare("INSERT INTO dataset_images (dataset_id, rel_path, width, height, format, bytes, sha256) VALUES (?, 'x.png', 4, 4, 'png', 10, 'h')").run(ds).lastInsertRowid,
    );
    db.prepare("INSERT INTO dataset_image_data (image_id, normalized, thumb_webp) VALUES (?, x'00', x'00')").run(img);
    expect(() => db.prepare("INSERT INTO adapters (name, kind) VALUES ('bad', 'dora')").run()).toThrow(/CHECK/);
    expect(() => db.prepare("INSERT INTO dataset_images (dataset_id, rel_path, width, height, format, bytes, sha256) VALUES (999, 'y', 1, 1, 'png', 1, 'z')").run()).toThrow(/FOREIGN KEY/);
    db.prepare('DELETE FROM datasets WHERE id = ?').run(ds);
    expect((db.prepare('SELECT count(*) AS n FROM dataset_image_data').get() as { n: number }).n).toBe(0);
    expect(checkHealth(db)).toMatchObject({ ok: true, integrity: ['ok'], foreignKeyViolations: 0, journalMode: 'wal' });
    db.close();
  });

  it('health reports foreign-key damage', () => {
    const db = openDatabase(dbFile());
    db.pragma('foreign_keys = OFF');
    db.prepare("INSERT INTO dataset_images (dataset_id, rel_path, width, height, format, bytes, sha256) VALUES (42, 'orphan', 1, 1, 'png', 1, 'z')").run();
    const health = checkHealth(db);
    expect(health.ok).toBe(false);
    expect(health.foreignKeyViolations).toBe(1);
    db.close();
  });

  it('migrate() is idempotent on an up-to-date database', () => {
    const db = openDatabase(dbFile());
    expect(migrate(db)).toBe(LATEST_SCHEMA_VERSION);
    db.close();
  });
});
