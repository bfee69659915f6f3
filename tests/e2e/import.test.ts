// The first thing an artist does: open the studio, import a folder, see what came in and what
// did not, and why. Run `npx electron-vite build` first; this drives out/ through chromium.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Locator, Page } from 'playwright-core';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ARTIFACTS, useFolder, useStudio } from './harness';

const CAT_CAPTION = 'a tabby cat asleep on a windowsill, inkwash style';

/** Three decodable images (two PNG, one JPEG), a corrupt PNG, an empty JPEG and one caption sidecar. */
async function makeImageFolder(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'shira-e2e-images-'));
  const solid = (width: number, height: number, r: number, g: number, b: number) => sharp({ create: { width, height, channels: 3, background: { r, g, b } } });
  await solid(96, 64, 200, 120, 60).png().toFile(join(dir, 'cat.png'));
  await solid(64, 96, 60, 130, 200).jpeg({ quality: 90 }).toFile(join(dir, 'dog.jpg'));
  await solid(80, 80, 90, 180, 110).png().toFile(join(dir, 'bird.png'));
  await writeFile(join(dir, 'cat.txt'), `${CAT_CAPTION}\n`);
  await writeFile(join(dir, 'broken.png'), randomBytes(2048));
  await writeFile(join(dir, 'empty.jpg'), '');
  return dir;
}

async function isFocused(locator: Locator): Promise<boolean> {
  return locator.evaluate((el) => el === el.ownerDocument.activeElement);
}

/** An <img> that finished loading and decoded to real pixels (a broken image has naturalWidth 0). */
async function hasLoaded(img: Locator): Promise<boolean> {
  return img.evaluate((el) => {
    const image = el as unknown as { complete: boolean; naturalWidth: number };
    return image.complete && image.naturalWidth > 0;
  });
}

async function openDatasets(page: Page): Promise<void> {
  await page.getByRole('navigation', { name: 'Views' }).getByRole('button', { name: 'Datasets' }).click();
  await page.getByRole('heading', { level: 1, name: 'Datasets' }).waitFor();
}

describe('studio server: import a folder', () => {
  const studio = useStudio();
  const images = useFolder(makeImageFolder);

  it('imports the good images, reports the bad ones with reasons, and shows thumbnails and captions', async () => {
    const { page, pageErrors } = studio();
    await page.goto(studio().url);
    // The token has served its purpose once the cookie is set; it must not stay in the address bar.
    expect(page.url()).not.toContain('token=');

    await page.getByRole('heading', { name: 'No adapters yet' }).waitFor();
    await openDatasets(page);

    await page.keyboard.press('Control+KeyI');
    const dialog = page.getByRole('dialog', { name: 'Import images' });
    await dialog.waitFor();
    await dialog.getByLabel('Folder on this computer').fill(images());
    await dialog.getByRole('button', { name: 'Import', exact: true }).click();

    await dialog.getByText('3 imported, 2 skipped').waitFor();
    const skipped = dialog.getByRole('list', { name: 'Skipped files' }).getByRole('listitem');
    expect(await skipped.count()).toBe(2);
    const brokenText = await skipped.filter({ hasText: 'broken.png' }).innerText();
    const emptyText = await skipped.filter({ hasText: 'empty.jpg' }).innerText();
    // Each line carries a reason beyond the file name.
    expect(brokenText.replace('broken.png', '').trim().length).toBeGreaterThan(5);
    expect(emptyText).toMatch(/empty file \(0 bytes\)/);

    await dialog.getByRole('button', { name: 'Open dataset' }).click();
    await dialog.waitFor({ state: 'detached' });

    const grid = page.getByRole('list', { name: /^Images in / });
    const thumbnails = grid.getByRole('img');
    await expect.poll(() => thumbnails.count()).toBe(3);
    for (const thumbnail of await thumbnails.all()) {
      await thumbnail.scrollIntoViewIfNeeded();
      expect(await thumbnail.isVisible()).toBe(true);
      await expect.poll(() => hasLoaded(thumbnail)).toBe(true);
    }

    const caption = page.getByRole('textbox', { name: 'Caption for cat.png' });
    expect(await caption.inputValue()).toBe(CAT_CAPTION);
    // The caption is also the image's description for screen readers.
    expect(await grid.getByRole('img', { name: CAT_CAPTION }).count()).toBe(1);

    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'import.png') });
    expect(pageErrors).toEqual([]);
  });

  it('closes the import dialog on Escape and returns focus to the button that opened it', async () => {
    const { page, pageErrors } = studio();
    await page.goto(studio().url);
    await openDatasets(page);

    const opener = page.getByRole('button', { name: 'Import images', exact: true });
    await opener.click();
    const dialog = page.getByRole('dialog', { name: 'Import images' });
    await dialog.waitFor();
    expect(await dialog.getAttribute('aria-modal')).toBe('true');
    // Focus starts inside the dialog, on the first field.
    expect(await isFocused(dialog.getByLabel('Folder on this computer'))).toBe(true);

    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    await expect.poll(() => isFocused(opener)).toBe(true);
    expect(pageErrors).toEqual([]);
  });

  it('switches views with Ctrl+1…7', async () => {
    const { page, pageErrors } = studio();
    await page.goto(studio().url);
    const main = page.getByRole('main');
    const expected = ['Library', 'Datasets', 'Train', 'Mix & Generate', 'Gallery', 'Compare', 'Models'];
    for (const [index, title] of expected.entries()) {
      await page.keyboard.press(`Control+Digit${index + 1}`);
      await main.getByRole('heading', { level: 1, name: title }).waitFor();
      const current = page.getByRole('navigation', { name: 'Views' }).getByRole('button', { name: new RegExp(`^${title}`) });
      expect(await current.getAttribute('aria-current')).toBe('page');
    }
    expect(pageErrors).toEqual([]);
  });
});
