// Window math for the gallery's virtual grid: from the scroll position and the viewport, which
// rows exist in the DOM. Only those rows are rendered, so 10,000 images cost what a screenful does.

export interface GridMetrics {
  /** Inner width available to the grid, px. */
  width: number;
  /** Height of the scrolling viewport, px. */
  height: number;
  scrollTop: number;
  count: number;
  /** Smallest cell edge; cells grow to fill the row. */
  minCell: number;
  gap: number;
  /** Extra rows above and below the viewport, so fast scrolling does not show holes. */
  overscan: number;
}

export interface GridWindow {
  columns: number;
  cell: number;
  /** Cell plus gap: the distance from one row's top to the next. */
  rowPitch: number;
  rows: number;
  firstRow: number;
  /** Exclusive. */
  endRow: number;
  /** Item indices in the DOM: [start, end). */
  start: number;
  end: number;
  totalHeight: number;
  /** Where the first rendered row sits, px from the top. */
  offsetY: number;
}

export function columnsFor(width: number, minCell: number, gap: number): number {
  return Math.max(1, Math.floor((Math.max(0, width) + gap) / (minCell + gap)));
}

export function gridWindow(m: GridMetrics): GridWindow {
  const columns = columnsFor(m.width, m.minCell, m.gap);
  const cell = Math.max(1, (m.width - m.gap * (columns - 1)) / columns);
  const rowPitch = cell + m.gap;
  const rows = Math.ceil(m.count / columns);
  const totalHeight = rows > 0 ? rows * rowPitch - m.gap : 0;
  // A scrollTop past the end (the list shrank under it) must still show the last rows.
  const top = Math.min(Math.max(0, m.scrollTop), Math.max(0, totalHeight - m.height));
  const firstVisible = Math.floor(top / rowPitch);
  const lastVisible = Math.ceil((top + Math.max(0, m.height)) / rowPitch);
  const firstRow = Math.max(0, firstVisible - m.overscan);
  const endRow = Math.min(rows, lastVisible + m.overscan);
  return {
    columns,
    cell,
    rowPitch,
    rows,
    firstRow,
    endRow,
    start: Math.min(m.count, firstRow * columns),
    end: Math.min(m.count, endRow * columns),
    totalHeight,
    offsetY: firstRow * rowPitch,
  };
}

/** The scrollTop that brings item `index` fully into view, or null when it already is. */
export function scrollToReveal(index: number, w: Pick<GridWindow, 'columns' | 'rowPitch' | 'cell'>, scrollTop: number, height: number): number | null {
  const top = Math.floor(index / w.columns) * w.rowPitch;
  const bottom = top + w.cell;
  if (top < scrollTop) return top;
  if (bottom > scrollTop + height) return Math.max(0, bottom - height);
  return null;
}

/** Page indices that cover items [start, end). */
export function pagesFor(start: number, end: number, pageSize: number): number[] {
  if (end <= start) return [];
  const first = Math.floor(start / pageSize);
  const last = Math.floor((end - 1) / pageSize);
  const out: number[] = [];
  for (let p = first; p <= last; p++) out.push(p);
  return out;
}
