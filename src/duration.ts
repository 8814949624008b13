/** Go-style durations (`48h`, `1h30m`, `90s`, `7d`), read by flags and by kiln.toml alike. */

const DURATION_UNITS: ReadonlyMap<string, number> = new Map(Object.entries({ ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }));

/** `text` in milliseconds, or undefined when it is not a duration. */
export function durationMs(text: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * (DURATION_UNITS.get(m[2] ?? '') ?? 0);
    consumed = re.lastIndex;
  }
  return consumed === 0 || consumed !== text.length ? undefined : total;
}
