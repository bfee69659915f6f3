// Versioned schema. A migration is applied exactly once, inside one transaction together with the
// `PRAGMA user_version` bump, so a crash mid-migration leaves the previous version intact.
// Never edit a shipped migration: append a new one.

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const now = `(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`;

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'library v1: models, datasets, adapters, training runs, generations, mixes',
    sql: /* sql */ `
      CREATE TABLE migrations (
        version    INTEGER PRIMARY KEY,
        name       TEXT NOT NULL,
        applied_at TEXT NOT NULL DEFAULT ${now}
      );

      CREATE TABLE base_models (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        family       TEXT NOT NULL,
        resolution   INTEGER NOT NULL CHECK (resolution > 0),
        config_json  TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config_json)),
        weights_path TEXT,
        -- identity of the base weights; adapters refuse to apply to another base
        weights_hash TEXT,
        is_default   INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
        created_at   TEXT NOT NULL DEFAULT ${now}
      );
      CREATE UNIQUE INDEX base_models_one_default ON base_models (is_default) WHERE is_default = 1;

      CREATE TABLE datasets (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL CHECK (length(name) > 0),
        trigger_word TEXT,
        source_path  TEXT,
        created_at   TEXT NOT NULL DEFAULT ${now},
        updated_at   TEXT NOT NULL DEFAULT ${now}
      );

      CREATE TABLE dataset_images (
        id             INTEGER PRIMARY KEY,
        dataset_id     INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
        rel_path       TEXT NOT NULL,
        width          INTEGER NOT NULL CHECK (width > 0),
        height         INTEGER NOT NULL CHECK (height > 0),
        format         TEXT NOT NULL,
        bytes          INTEGER NOT NULL CHECK (bytes > 0),
        sha256         TEXT NOT NULL,
        caption        TEXT NOT NULL DEFAULT '',
        caption_source TEXT NOT NULL DEFAULT 'none' CHECK (caption_source IN ('sidecar', 'folder', 'none', 'user')),
        -- kohya "N_name" folders: N repeats per epoch, "name" as class tokens
        repeats        INTEGER NOT NULL DEFAULT 1 CHECK (repeats >= 1),
        class_tokens   TEXT,
        created_at     TEXT NOT NULL DEFAULT ${now},
        UNIQUE (dataset_id, sha256)
      );
      CREATE INDEX dataset_images_by_dataset ON dataset_images (dataset_id, id);

      -- Pixels live apart from the metadata rows so listing a dataset never reads them.
      CREATE TABLE dataset_image_data (
        image_id          INTEGER PRIMARY KEY REFERENCES dataset_images (id) ON DELETE CASCADE,
        -- orientation applied, alpha flattened onto white, 8-bit sRGB, long side <= 2048, PNG
        normalized        BLOB NOT NULL,
        thumb_webp        BLOB NOT NULL
      );

      CREATE TABLE adapters (
        id               INTEGER PRIMARY KEY,
        name             TEXT NOT NULL CHECK (length(name) > 0),
        kind             TEXT NOT NULL CHECK (kind IN ('shira', 'lora')),
        -- SHiRA: {mask, density, seed, ...}; LoRA: {rank, alpha, ...}
        method_json      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(method_json)),
        base_model_id    INTEGER REFERENCES base_models (id) ON DELETE RESTRICT,
        dataset_id       INTEGER REFERENCES datasets (id) ON DELETE SET NULL,
        trigger_words    TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(trigger_words)),
        preferred_weight REAL NOT NULL DEFAULT 1.0,
        notes            TEXT NOT NULL DEFAULT '',
        cover_generation_id INTEGER,
        content_hash     TEXT,
        file_sha256      TEXT,
        created_at       TEXT NOT NULL DEFAULT ${now},
        updated_at       TEXT NOT NULL DEFAULT ${now}
      );
      CREATE INDEX adapters_by_base ON adapters (base_model_id);

      CREATE TABLE adapter_tags (
        adapter_id INTEGER NOT NULL REFERENCES adapters (id) ON DELETE CASCADE,
        tag        TEXT NOT NULL CHECK (length(tag) > 0),
        PRIMARY KEY (adapter_id, tag)
      ) WITHOUT ROWID;

      -- One row per adapted tensor. 'encoding' names how values/indices are laid out so later
      -- formats (implicit Rand/Struct indices, delta+varint) arrive without a table change.
      CREATE TABLE adapter_tensors (
        id          INTEGER PRIMARY KEY,
        adapter_id  INTEGER NOT NULL REFERENCES adapters (id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        shape_json  TEXT NOT NULL CHECK (json_valid(shape_json)),
        mask_kind   TEXT,
        encoding    TEXT NOT NULL,
        meta_json   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json)),
        values_blob BLOB NOT NULL,
        index_blob  BLOB,
        UNIQUE (adapter_id, name)
      );

      CREATE TABLE training_runs (
        id            INTEGER PRIMARY KEY,
        kind          TEXT NOT NULL CHECK (kind IN ('shira', 'lora', 'base')),
        dataset_id    INTEGER REFERENCES datasets (id) ON DELETE SET NULL,
        base_model_id INTEGER REFERENCES base_models (id) ON DELETE SET NULL,
        adapter_id    INTEGER REFERENCES adapters (id) ON DELETE SET NULL,
        config_json   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config_json)),
        status        TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
        device        TEXT,
        error         TEXT,
        created_at    TEXT NOT NULL DEFAULT ${now},
        started_at    TEXT,
        finished_at   TEXT
      );

      CREATE TABLE training_loss (
        run_id  INTEGER NOT NULL REFERENCES training_runs (id) ON DELETE CASCADE,
        step    INTEGER NOT NULL CHECK (step >= 0),
        loss    REAL NOT NULL,
        lr      REAL,
        elapsed_ms INTEGER,
        PRIMARY KEY (run_id, step)
      ) WITHOUT ROWID;

      CREATE TABLE generations (
        id              INTEGER PRIMARY KEY,
        base_model_id   INTEGER REFERENCES base_models (id) ON DELETE SET NULL,
        prompt          TEXT NOT NULL,
        negative_prompt TEXT NOT NULL DEFAULT '',
        seed            INTEGER NOT NULL,
        sampler         TEXT NOT NULL,
        steps           INTEGER NOT NULL CHECK (steps > 0),
        guidance        REAL NOT NULL,
        width           INTEGER NOT NULL CHECK (width > 0),
        height          INTEGER NOT NULL CHECK (height > 0),
        -- [{adapterId, alpha}] as used, so a recipe re-runs even after adapters are renamed
        mix_json        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(mix_json)),
        image_png       BLOB NOT NULL,
        thumb_webp      BLOB,
        favourite       INTEGER NOT NULL DEFAULT 0 CHECK (favourite IN (0, 1)),
        duration_ms     INTEGER,
        created_at      TEXT NOT NULL DEFAULT ${now}
      );
      CREATE INDEX generations_recent ON generations (created_at DESC);

      CREATE TABLE mixes (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE CHECK (length(name) > 0),
        created_at TEXT NOT NULL DEFAULT ${now},
        updated_at TEXT NOT NULL DEFAULT ${now}
      );

      CREATE TABLE mix_entries (
        mix_id     INTEGER NOT NULL REFERENCES mixes (id) ON DELETE CASCADE,
        adapter_id INTEGER NOT NULL REFERENCES adapters (id) ON DELETE CASCADE,
        alpha      REAL NOT NULL CHECK (alpha BETWEEN -4 AND 4),
        PRIMARY KEY (mix_id, adapter_id)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    name: 'durable training jobs; adapter identity lookups',
    sql: /* sql */ `
      -- A training job is a training_runs row: queued → running → completed | failed | cancelled.
      -- 'running' rows found at start were interrupted (app quit, crash) and go back to 'queued';
      -- the job then resumes from its last checkpoint, so attempts counts worker deaths, not restarts.
      ALTER TABLE training_runs ADD COLUMN name TEXT;
      ALTER TABLE training_runs ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE training_runs ADD COLUMN steps INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE training_runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE training_runs ADD COLUMN result_json TEXT CHECK (result_json IS NULL OR json_valid(result_json));
      CREATE INDEX training_runs_by_status ON training_runs (status, id);
      -- Preview grids the worker draws every N steps (one row per sampling step, PNG).
      CREATE TABLE training_samples (
        id        INTEGER PRIMARY KEY,
        run_id    INTEGER NOT NULL REFERENCES training_runs (id) ON DELETE CASCADE,
        step      INTEGER NOT NULL CHECK (step >= 0),
        image_png BLOB NOT NULL,
        UNIQUE (run_id, step)
      );
      CREATE INDEX adapters_by_content ON adapters (content_hash);
      -- Concept-loss measurements of a set of adapters (Compare view), newest wins per set.
      CREATE TABLE concept_results (
        id          INTEGER PRIMARY KEY,
        -- sorted JSON array of adapter ids, the lookup key
        adapter_ids TEXT NOT NULL CHECK (json_valid(adapter_ids)),
        result_json TEXT NOT NULL CHECK (json_valid(result_json)),
        created_at  TEXT NOT NULL DEFAULT ${now}
      );
      CREATE INDEX concept_results_by_set ON concept_results (adapter_ids, id);
      CREATE INDEX adapters_by_file ON adapters (file_sha256);
      -- which engine drew a generation ('worker' = libtorch, 'ort' = onnxruntime-node)
      ALTER TABLE generations ADD COLUMN engine TEXT;
      -- a saved mix keeps the order the artist arranged its adapters in
      ALTER TABLE mix_entries ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
      -- trained values (SHiRA: Σ K; LoRA: Σ |A| + |B|), for bytes per value and parameter matching
      ALTER TABLE adapters ADD COLUMN trainable INTEGER NOT NULL DEFAULT 0;
      -- the SHA-256 of the base weights the adapter was trained on (its file's base_identity)
      ALTER TABLE adapters ADD COLUMN base_identity TEXT;
    `,
  },
  {
    version: 3,
    name: 'gallery: compare grids, one row per identical generation; pixel-art marks; covers from first images',
    sql: /* sql */ `
      -- SHA-256 of what fixes a generation's pixels (base weights, each adapter's content and α, prompt,
      -- negative prompt, seed, sampler, steps, guidance, engine): an identical request reuses the row.
      -- NULL for rows written before this version (they are never matched).
      ALTER TABLE generations ADD COLUMN recipe_key TEXT;
      CREATE INDEX generations_by_recipe ON generations (recipe_key);
      -- 1: shown in the gallery on its own. 0: drawn as a Compare cell, kept only while a grid names it
      -- (rows that no grid, cover or favourite holds are removed at the next start).
      ALTER TABLE generations ADD COLUMN standalone INTEGER NOT NULL DEFAULT 1 CHECK (standalone IN (0, 1));
      -- The artist marked it as pixel art: shown with nearest-neighbour scaling at any size.
      ALTER TABLE generations ADD COLUMN pixel_art INTEGER NOT NULL DEFAULT 0 CHECK (pixel_art IN (0, 1));
      ALTER TABLE datasets ADD COLUMN pixel_art INTEGER NOT NULL DEFAULT 0 CHECK (pixel_art IN (0, 1));

      -- A Compare grid kept as one gallery entry: its axes as shown, its cells by generation.
      CREATE TABLE generation_grids (
        id          INTEGER PRIMARY KEY,
        title       TEXT NOT NULL CHECK (length(title) > 0),
        -- {mode, rows: [{label, sub, kind}], columns: [...], prompts, seed, steps, guidance, negativePrompt}
        layout_json TEXT NOT NULL CHECK (json_valid(layout_json)),
        created_at  TEXT NOT NULL DEFAULT ${now}
      );
      CREATE INDEX generation_grids_recent ON generation_grids (created_at DESC);
      CREATE TABLE generation_grid_cells (
        grid_id       INTEGER NOT NULL REFERENCES generation_grids (id) ON DELETE CASCADE,
        row           INTEGER NOT NULL CHECK (row >= 0),
        col           INTEGER NOT NULL CHECK (col >= 0),
        generation_id INTEGER NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
        PRIMARY KEY (grid_id, row, col)
      ) WITHOUT ROWID;
      CREATE INDEX generation_grid_cells_by_generation ON generation_grid_cells (generation_id);

      -- Adapters without a cover take the first image made with them (new ones do so as they are drawn).
      UPDATE adapters SET cover_generation_id = (
        SELECT min(g.id) FROM generations g, json_each(g.mix_json) j
        WHERE json_extract(j.value, '$.adapterId') = adapters.id AND json_extract(j.value, '$.alpha') != 0
      ) WHERE cover_generation_id IS NULL;
    `,
  },
  {
    version: 4,
    name: 'Stable Diffusion checkpoints registered by reference',
    sql: /* sql */ `
      -- 'builtin': shipped in resources/models, weights_path is the native format the engine loads.
      -- 'user': a checkpoint the artist added by path (core/models/checkpoints.ts). Its files stay where they are;
      -- weights_path stays NULL (nothing built for the built-in format opens them) and weights_hash is NULL until
      -- the background SHA-256 is done.
      ALTER TABLE base_models ADD COLUMN source TEXT NOT NULL DEFAULT 'builtin' CHECK (source IN ('builtin', 'user'));
      -- the .safetensors file or diffusers folder as registered
      ALTER TABLE base_models ADD COLUMN source_path TEXT;
      -- what the headers said: layout, files (path, size, mtime, dtype, sha256), detected prediction, dtype, EMA,
      -- metadata, evidence; written whole, in the statement that registers or re-hashes the model
      ALTER TABLE base_models ADD COLUMN checkpoint_json TEXT CHECK (checkpoint_json IS NULL OR json_valid(checkpoint_json));
      -- the user's ε/v choice; NULL = what was detected
      ALTER TABLE base_models ADD COLUMN prediction TEXT CHECK (prediction IS NULL OR prediction IN ('epsilon', 'v'));
      CREATE UNIQUE INDEX base_models_by_source_path ON base_models (source_path) WHERE source_path IS NOT NULL;
    `,
  },
];

export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;
