// Settings of this computer, not of the library: <data>/settings.json. The device is a fact about the
// machine the app runs on (its GPU), so it stays out of library.sqlite, which may be opened elsewhere.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEVICE_PREFERENCES, type DevicePreference } from '../../../shared/api';

export interface MachineSettings {
  device: DevicePreference;
}

const DEFAULTS: MachineSettings = { device: 'auto' };

export function settingsFile(dataDir: string): string {
  return join(dataDir, 'settings.json');
}

/** Unreadable or unknown values fall back to the defaults: a bad settings file must not stop the app. */
export function readSettings(dataDir: string): MachineSettings {
  const file = settingsFile(dataDir);
  if (!existsSync(file)) return { ...DEFAULTS };
  try {
    const raw = JSON.parse(readFileSync(file, 'utf8')) as Partial<Record<keyof MachineSettings, unknown>>;
    const device = DEVICE_PREFERENCES.find((d) => d === raw.device) ?? DEFAULTS.device;
    return { device };
  } catch {
    return { ...DEFAULTS };
  }
}

/** Temp file then rename: a crash leaves the old settings or the new, never half of one. */
export function writeSettings(dataDir: string, patch: Partial<MachineSettings>): MachineSettings {
  const next = { ...readSettings(dataDir), ...patch };
  mkdirSync(dataDir, { recursive: true });
  const file = settingsFile(dataDir);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(next, null, 2)}\n`);
  renameSync(tmp, file);
  return next;
}
