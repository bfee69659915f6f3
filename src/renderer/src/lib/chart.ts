// Loss curves as SVG paths. Per-step loss of a diffusion model is noisy, so the chart draws the
// raw points faintly and an exponential moving average on top: the trend is what artists judge.

export interface Point {
  step: number;
  loss: number;
}

export interface ChartGeometry {
  raw: string;
  smooth: string;
  yMin: number;
  yMax: number;
  xMax: number;
  last: Point | null;
}

/** Exponential moving average with a debiased start (the first values are not pulled towards 0). */
export function smooth(points: readonly Point[], weight = 0.8): Point[] {
  let avg = 0;
  return points.map((p, i) => {
    avg = weight * avg + (1 - weight) * p.loss;
    return { step: p.step, loss: avg / (1 - weight ** (i + 1)) };
  });
}

/** Keeps at most `max` points, evenly spaced, always the last: live runs can report thousands. */
export function thin(points: readonly Point[], max: number): Point[] {
  if (points.length <= max) return [...points];
  const stride = points.length / max;
  const out: Point[] = [];
  for (let i = 0; i < max - 1; i++) out.push(points[Math.floor(i * stride)]);
  out.push(points[points.length - 1]);
  return out;
}

export function chartGeometry(points: readonly Point[], width: number, height: number, pad = 4): ChartGeometry {
  const finite = points.filter((p) => Number.isFinite(p.loss));
  if (finite.length === 0) return { raw: '', smooth: '', yMin: 0, yMax: 0, xMax: 0, last: null };
  const shown = thin(finite, 400);
  const losses = shown.map((p) => p.loss);
  let yMin = Math.min(...losses);
  let yMax = Math.max(...losses);
  if (yMax - yMin < 1e-9) {
    yMin -= 0.5;
    yMax += 0.5;
  }
  const xMin = shown[0].step;
  const xMax = Math.max(shown[shown.length - 1].step, xMin + 1);
  const x = (step: number) => pad + ((step - xMin) / (xMax - xMin)) * (width - 2 * pad);
  const y = (loss: number) => pad + (1 - (loss - yMin) / (yMax - yMin)) * (height - 2 * pad);
  const path = (ps: Point[]) => ps.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p.step).toFixed(1)},${y(p.loss).toFixed(1)}`).join('');
  return { raw: path(shown), smooth: path(smooth(shown)), yMin, yMax, xMax, last: finite[finite.length - 1] };
}
