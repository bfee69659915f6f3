// Arrow-key movement through a wrapped grid of cards (roving tabindex): Left/Right step one item,
// Up/Down step a row, Home/End jump to the ends, PageUp/PageDown step `pageRows` rows.

export function moveIndex(index: number, key: string, columns: number, count: number, pageRows = 3): number | null {
  if (count === 0) return null;
  const cols = Math.max(1, columns);
  const clamp = (i: number) => Math.min(count - 1, Math.max(0, i));
  switch (key) {
    case 'ArrowRight':
      return clamp(index + 1);
    case 'ArrowLeft':
      return clamp(index - 1);
    case 'ArrowDown':
      // From a short last row, Down stays put rather than jumping sideways.
      return index + cols < count ? index + cols : index;
    case 'ArrowUp':
      return index - cols >= 0 ? index - cols : index;
    case 'Home':
      return 0;
    case 'End':
      return count - 1;
    case 'PageDown':
      return clamp(index + cols * pageRows);
    case 'PageUp':
      return clamp(index - cols * pageRows);
    default:
      return null;
  }
}

/** Columns of a CSS grid as laid out now: the items that share the first item's top edge. */
export function columnsOf(items: ArrayLike<{ offsetTop: number }>): number {
  if (items.length === 0) return 1;
  const top = items[0].offsetTop;
  let n = 0;
  while (n < items.length && items[n].offsetTop === top) n++;
  return Math.max(1, n);
}
